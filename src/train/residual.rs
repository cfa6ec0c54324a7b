//! `relu(a + b)` (a residual block's join) as one op with a backward: both inputs get the
//! upstream grad where the output is positive. candle's add and ReLU backward are eight
//! passes over the map; this is two.

use candle_core::{bail, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{custom_op2, Kernel2, Real};

const CHUNK: usize = 1 << 16;

struct AddRelu;

impl Kernel2 for AddRelu {
    const NAME: &'static str = "add-relu";

    fn run<T: Real>(&self, a: &[T], shape: &Shape, b: &[T], b_shape: &Shape) -> Result<(Vec<T>, Shape)> {
        if shape != b_shape {
            bail!("add_relu: shapes {shape:?} and {b_shape:?} differ");
        }
        let mut out = vec![T::zero(); a.len()];
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(dst, (a, b))| {
                for (o, (&x, &y)) in dst.iter_mut().zip(a.iter().zip(b)) {
                    let s = x + y;
                    *o = if s > T::zero() { s } else { T::zero() };
                }
            });
        Ok((out, shape.clone()))
    }
}

custom_op2!(AddRelu, |_: &AddRelu,
                      _: &Tensor,
                      _: &Tensor,
                      res: &Tensor,
                      grad: &Tensor| {
    let masked = res.apply_op2_no_bwd(grad, &WherePositive)?;
    Ok((masked.clone(), masked))
});

/// (output, grad) -> grad where the output is positive, else 0: ReLU's backward.
pub(crate) struct WherePositive;

impl Kernel2 for WherePositive {
    const NAME: &'static str = "relu-grad";

    fn run<T: Real>(&self, y: &[T], shape: &Shape, g: &[T], _: &Shape) -> Result<(Vec<T>, Shape)> {
        let mut out = vec![T::zero(); g.len()];
        out.par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|(dst, (y, g))| {
                for (o, (&yv, &gv)) in dst.iter_mut().zip(y.iter().zip(g)) {
                    *o = if yv > T::zero() { gv } else { T::zero() };
                }
            });
        Ok((out, shape.clone()))
    }
}

custom_op2!(WherePositive);

/// `relu(a + b)`, differentiable in both.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::gradcheck::{check_gradient, seeded_normal};

    #[test]
    fn matches_add_then_relu_with_its_gradient() -> Result<()> {
        let a = seeded_normal((2, 3, 4, 5), 0.0, 1.0, 1)?;
        let b = seeded_normal((2, 3, 4, 5), 0.0, 1.0, 2)?;
        let gap = (add_relu(&a, &b)? - (&a + &b)?.relu()?)?
            .abs()?
            .flatten_all()?
            .max(0)?;
        assert_eq!(gap.to_scalar::<f64>()?, 0.0);
        assert!(check_gradient(&a, |a| add_relu(a, &b), 3)? < 1e-7);
        assert!(check_gradient(&b, |b| add_relu(&a, b), 4)? < 1e-7);
        Ok(())
    }
}
