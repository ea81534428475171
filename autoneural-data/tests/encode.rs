//! Loss masking covers exactly the assistant turns (text + end-of-turn), never user text,
//! system text or image tokens; batches pad with masks.

use std::path::PathBuf;

use autoneural_data::{ImageRef, Message, Record, Role, encode_record, pad_batch};
use autoneural_model::tokenizer::TextTokenizer;
use autoneural_model::vlm::ImageTokens;

fn tokenizer() -> TextTokenizer {
    // The VLM fixture tokenizer: LFM2's chat template (<|im_start|>role\n...<|im_end|>\n).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vision/autoneural-tiny");
    TextTokenizer::from_dir(&dir, &[7]).unwrap()
}

fn record(turns: &[(Role, &str)], images: usize) -> Record {
    Record {
        messages: turns.iter().map(|&(role, c)| Message { role, content: c.to_string() }).collect(),
        images: vec![ImageRef::Path(PathBuf::from("x.png")); images],
        task: None,
        line: 1,
        unit: "line",
    }
}

#[test]
fn loss_covers_only_assistant_turns() {
    let tok = tokenizer();
    let img = ImageTokens { image_token_id: 320, wrap: false, bounds: None };
    let rec = record(
        &[
            (Role::System, "Be brief."),
            (Role::User, "<image>How many cars?"),
            (Role::Assistant, "Two cars."),
            (Role::User, "Which colour?"),
            (Role::Assistant, "Red."),
        ],
        1,
    );
    let enc = encode_record(&tok, &rec, img, &vec![4; rec.images.len()]).unwrap();
    assert_eq!(enc.ids.len(), enc.loss_mask.len());
    assert_eq!(enc.ids.iter().filter(|&&i| i == 320).count(), 4, "one image, four tokens");
    // The trained tokens, decoded, are the assistant turns with their end-of-turn markup.
    let trained: Vec<u32> = enc.ids.iter().zip(&enc.loss_mask).filter(|(_, m)| **m).map(|(i, _)| *i).collect();
    let text = tok.decode(&trained, false).unwrap();
    assert_eq!(text, "Two cars.<|im_end|>\nRed.<|im_end|>\n");
    // Nothing of the user or system turns.
    let untrained: Vec<u32> = enc.ids.iter().zip(&enc.loss_mask).filter(|(_, m)| !**m).map(|(i, _)| *i).collect();
    let rest = tok.decode(&untrained, false).unwrap();
    assert!(rest.contains("Be brief.") && rest.contains("How many cars?") && rest.contains("Which colour?"));
    assert!(!rest.contains("Red."));
}

#[test]
fn untagged_images_go_first_and_batches_pad() {
    let tok = tokenizer();
    let img = ImageTokens { image_token_id: 320, wrap: false, bounds: None };
    // Images of different sizes give different token counts: 2 + 4.
    let a =
        encode_record(&tok, &record(&[(Role::User, "Colour?"), (Role::Assistant, "Red.")], 2), img, &[2, 4]).unwrap();
    let first_image = a.ids.iter().position(|&i| i == 320).unwrap();
    let user_text = tok.encode("Colour?", false).unwrap();
    let text_at = a.ids.windows(user_text.len()).position(|w| w == user_text.as_slice()).unwrap();
    assert!(first_image < text_at);
    assert_eq!(a.ids.iter().filter(|&&i| i == 320).count(), 6);
    let b = encode_record(&tok, &record(&[(Role::User, "Hi"), (Role::Assistant, "Hello there, friend.")], 0), img, &[])
        .unwrap();
    let batch = pad_batch(&[a.clone(), b.clone()], 0);
    assert_eq!(batch.rows, 2);
    assert_eq!(batch.len, a.ids.len().max(b.ids.len()) - 1);
    for (r, s) in [a, b].iter().enumerate() {
        let row = |v: &[bool]| v[r * batch.len..(r + 1) * batch.len].to_vec();
        let n = s.ids.len() - 1;
        assert_eq!(&batch.targets[r * batch.len..r * batch.len + n], &s.ids[1..]);
        assert_eq!(row(&batch.attention_mask).iter().filter(|x| **x).count(), n);
        assert_eq!(row(&batch.loss_mask)[..n], s.loss_mask[1..]);
        assert!(row(&batch.loss_mask)[n..].iter().all(|x| !x), "padding is never trained");
    }
}
