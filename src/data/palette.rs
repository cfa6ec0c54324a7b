//! Colours for saved predictions: the PASCAL VOC palette (bit-interleaved class index), and
//! the official Cityscapes colours for its 19 classes. Index 255 is white.

use crate::config::data::DatasetKind;

const CITYSCAPES: [[u8; 3]; 19] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
];

/// VOC's colour for index `i`: the bits of i spread over the high bits of R, G and B.
fn voc_colour(i: usize) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    let mut c = i;
    for shift in (0..8).rev() {
        for (channel, value) in rgb.iter_mut().enumerate() {
            *value |= (((c >> channel) & 1) as u8) << shift;
        }
        c >>= 3;
    }
    rgb
}

/// 256 colours for a palette PNG of class indices.
pub fn palette(dataset: DatasetKind) -> Vec<[u8; 3]> {
    let mut colours: Vec<[u8; 3]> = (0..256).map(voc_colour).collect();
    if dataset == DatasetKind::Cityscapes {
        colours[..19].copy_from_slice(&CITYSCAPES);
    }
    colours[255] = [255, 255, 255];
    colours
}

#[cfg(test)]
mod tests {
    #[test]
    fn voc_colours_are_the_published_ones() {
        assert_eq!(super::voc_colour(0), [0, 0, 0]);
        assert_eq!(super::voc_colour(1), [128, 0, 0]);
        assert_eq!(super::voc_colour(15), [192, 128, 128]);
        assert_eq!(super::voc_colour(20), [0, 64, 128]);
    }
}
