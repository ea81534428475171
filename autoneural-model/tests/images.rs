//! Image decoding and preprocessing: formats, EXIF orientation, grayscale/alpha, resizing
//! against PIL, and clear errors for bad files.

use std::path::PathBuf;

use autoneural_model::ModelError;
use autoneural_model::images::{Preprocess, load_image};
use burn::tensor::Device;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/images")
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden.json")).unwrap()).unwrap()
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

#[test]
fn exif_orientation_is_applied() {
    let g = golden();
    let img = load_image(&fixtures().join("exif-rotate90.jpg")).unwrap();
    let shape: Vec<u64> = g["exif_upright_shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!((img.rgb.height() as u64, img.rgb.width() as u64), (shape[0], shape[1]), "upright 6x4, not 4x6");
    let want = bytes(&g["exif_upright"]);
    let worst = img.rgb.as_raw().iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    // Decoders differ by a level or two on JPEG's inverse DCT.
    assert!(worst <= 3, "max difference to PIL {worst}");
}

#[test]
fn bilinear_resize_matches_pil() {
    let g = golden();
    let img = load_image(&fixtures().join("small.png")).unwrap();
    for size in [64usize, 16] {
        let pre = Preprocess::Fixed { size, mean: [0.0; 3], std: [1.0; 3] };
        let x = pre.apply(&img, &Device::flex());
        assert_eq!(x.dims(), [1, 3, size, size]);
        let ours = x.into_data().try_into_vec_as::<f32>().unwrap();
        let pil = bytes(&g["resized"][size.to_string()]);
        let mut worst = 0f32;
        for p in 0..size * size {
            for c in 0..3 {
                worst = worst.max((ours[c * size * size + p] * 255.0 - pil[p * 3 + c] as f32).abs());
            }
        }
        assert!(worst <= 2.5, "{size}: max difference to PIL {worst} levels");
    }
}

#[test]
fn formats_and_color_modes_decode_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let mut rgba = RgbaImage::new(5, 3);
    for (x, y, p) in rgba.enumerate_pixels_mut() {
        *p = Rgba([x as u8 * 40, y as u8 * 80, 7, if x == 0 { 0 } else { 255 }]);
    }
    let img = DynamicImage::ImageRgba8(rgba);
    for (name, fmt, src) in [
        ("a.png", ImageFormat::Png, img.clone()),
        ("a.webp", ImageFormat::WebP, img.clone()),
        ("a.jpg", ImageFormat::Jpeg, DynamicImage::ImageRgb8(img.to_rgb8())),
        ("gray.png", ImageFormat::Png, DynamicImage::ImageLuma8(img.to_luma8())),
        // Extension says PNG, bytes are JPEG: the format is sniffed from the bytes.
        ("lies.png", ImageFormat::Jpeg, DynamicImage::ImageRgb8(img.to_rgb8())),
    ] {
        let path = dir.path().join(name);
        src.save_with_format(&path, fmt).unwrap();
        let loaded = load_image(&path).unwrap();
        assert_eq!(loaded.rgb.dimensions(), (5, 3), "{name}");
        if name == "a.png" || name == "a.webp" {
            // Alpha is dropped, colour kept (lossless formats).
            assert_eq!(loaded.rgb.get_pixel(0, 1).0, [0, 80, 7], "{name}");
        }
        if name == "gray.png" {
            let p = loaded.rgb.get_pixel(2, 2).0;
            assert!(p[0] == p[1] && p[1] == p[2], "grayscale expands to equal channels");
        }
    }
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not an image at all").unwrap();
    let mut png = Vec::new();
    DynamicImage::new_rgb8(32, 32).write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png).unwrap();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let missing = dir.path().join("missing.jpg");
    for (path, expect) in [(&garbage, "not a PNG, JPEG or WebP"), (&truncated, ""), (&missing, "")] {
        let err = load_image(path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(path.file_name().unwrap().to_str().unwrap()), "names the file: {msg}");
        assert!(msg.contains(expect), "{msg}");
        assert!(matches!(err, ModelError::Image { .. } | ModelError::Io { .. } | ModelError::File(_)));
    }
}
