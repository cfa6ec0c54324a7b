//! The seeded ablation suite: size, number of classes, sharpness (how confident the
//! maps are) and object size vary across cases.

use crate::synthetic::{softmax_map, MapSpec};

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub spec: MapSpec,
    pub images: usize,
    pub seed: u64,
}

impl Case {
    pub fn shape(&self) -> [usize; 4] {
        [self.images, self.spec.classes, self.spec.height, self.spec.width]
    }

    /// The case's (B, C, H, W) probabilities.
    pub fn probs(&self) -> Vec<f32> {
        (0..self.images)
            .flat_map(|b| softmax_map(&self.spec, self.seed * 1000 + b as u64))
            .collect()
    }
}

pub fn suite(quick: bool) -> Vec<Case> {
    // (side, classes, present, sharpness, grid): grid 3 gives large objects, 10 small ones.
    let full: &[(usize, usize, usize, f32, usize)] = &[
        (24, 2, 2, 3.0, 3),
        (24, 5, 3, 1.0, 4),
        (32, 5, 3, 3.0, 10),
        (48, 5, 4, 8.0, 6),
        (48, 21, 4, 2.0, 8),
        (64, 2, 2, 1.5, 3),
        (64, 5, 3, 3.0, 10),
        (128, 5, 3, 3.0, 6),
        (128, 21, 5, 2.0, 10),
    ];
    let quick_cases: &[(usize, usize, usize, f32, usize)] = &[
        (24, 2, 2, 3.0, 3),
        (24, 5, 3, 1.0, 4),
        (32, 5, 3, 3.0, 10),
        (48, 5, 4, 8.0, 6),
    ];
    let chosen = if quick { quick_cases } else { full };
    chosen
        .iter()
        .enumerate()
        .map(|(k, &(side, classes, present, sharpness, grid))| Case {
            name: format!("{side}x{side}_c{classes}_sharp{sharpness}_grid{grid}"),
            spec: MapSpec {
                classes,
                height: side,
                width: side,
                grid,
                sharpness,
                present,
            },
            images: 2,
            seed: 100 + k as u64,
        })
        .collect()
}
