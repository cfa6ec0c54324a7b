//! The experiment's parameter groups (`Segmentor.get_params_list` / `group_weight`): for
//! each module in order, one group of its parameters with more than one dimension (weight
//! decay) and one of its 1-D parameters (biases and norm weights, decay 0). The backbone
//! runs at `lr`, the method, head and auxiliary modules at `multiplier x lr`.

use candle_core::Var;

use super::ParamGroup;

/// A module's trainable parameters, in `named_parameters()` order.
pub struct Module {
    pub params: Vec<Var>,
    /// Applied to the base `lr` (1 for the backbone, the yaml's `multiplier` for the rest).
    pub lr_multiplier: f64,
}

/// Two groups per module, decayed first, as `group_weight` appends them. Scalars (0-D)
/// count as decayed: torch tests `len(param.shape) == 1`.
pub fn module_groups(modules: Vec<Module>, lr: f64, weight_decay: f64) -> Vec<ParamGroup> {
    let mut groups = Vec::with_capacity(2 * modules.len());
    for m in modules {
        let lr = m.lr_multiplier * lr;
        let (no_decay, decay): (Vec<Var>, Vec<Var>) = m.params.into_iter().partition(|p| p.rank() == 1);
        groups.push(ParamGroup {
            params: decay,
            lr,
            weight_decay,
        });
        groups.push(ParamGroup {
            params: no_decay,
            lr,
            weight_decay: 0.0,
        });
    }
    groups
}

/// `get_params_list(lr, multiplier)`: backbone, method, head, then (with an aux head)
/// aux_conv and aux_head.
pub fn segmentor_groups(
    backbone: Vec<Var>,
    method: Vec<Var>,
    head: Vec<Var>,
    aux: Option<(Vec<Var>, Vec<Var>)>,
    lr: f64,
    multiplier: f64,
    weight_decay: f64,
) -> Vec<ParamGroup> {
    let mut modules = vec![
        Module {
            params: backbone,
            lr_multiplier: 1.0,
        },
        Module {
            params: method,
            lr_multiplier: multiplier,
        },
        Module {
            params: head,
            lr_multiplier: multiplier,
        },
    ];
    if let Some((conv, head)) = aux {
        modules.push(Module {
            params: conv,
            lr_multiplier: multiplier,
        });
        modules.push(Module {
            params: head,
            lr_multiplier: multiplier,
        });
    }
    module_groups(modules, lr, weight_decay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Result};

    #[test]
    fn splits_by_rank_and_scales_lr() -> Result<()> {
        let dev = Device::Cpu;
        let var = |shape: &[usize]| Var::zeros(shape, DType::F32, &dev);
        let groups = segmentor_groups(
            vec![var(&[4, 3, 3, 3])?, var(&[4])?, var(&[])?],
            vec![var(&[2, 4])?],
            vec![var(&[2])?],
            None,
            0.01,
            10.0,
            5e-4,
        );
        let sizes: Vec<usize> = groups.iter().map(|g| g.params.len()).collect();
        assert_eq!(sizes, [2, 1, 1, 0, 0, 1]);
        let lrs: Vec<f64> = groups.iter().map(|g| g.lr).collect();
        assert_eq!(lrs, [0.01, 0.01, 0.1, 0.1, 0.1, 0.1]);
        let wds: Vec<f64> = groups.iter().map(|g| g.weight_decay).collect();
        assert_eq!(wds, [5e-4, 0.0, 5e-4, 0.0, 5e-4, 0.0]);
        Ok(())
    }
}
