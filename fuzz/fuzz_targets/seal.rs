//! Sealed values (`session::seal::Sealer`): what the browser carries between nodes.
//!
//! Input: a control byte (purpose, which character to change), then a value to open,
//! which is also sealed as a plaintext.
//! Checked: a value opens for at most one purpose, and only under a key of the cluster;
//! whatever is sealed opens to itself for its purpose, after a key rotation too, never
//! for the other purpose, never under another cluster's key of the same name, and not
//! once any one character of it is changed.
#![no_main]

use fuzz_common::{foreign_sealer, rotated_sealer, sealer};
use libfuzzer_sys::fuzz_target;
use portcullis::session::seal::Purpose;

/// Every purpose: the console's session cookie and form tokens, the sign-in time, the
/// hand-off code, the sign-in state.
const PURPOSES: [Purpose; 5] = [
    Purpose::Handoff,
    Purpose::SignInState,
    Purpose::ConsoleSession,
    Purpose::ConsoleForm,
    Purpose::SignInTime,
];

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let p = PURPOSES[usize::from(ctl) % PURPOSES.len()];
    let other = PURPOSES[(usize::from(ctl) + 1) % PURPOSES.len()];
    let s = sealer();
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Some(plain) = s.open(p, text) {
            assert!(s.open(other, text).is_none(), "opened for both purposes");
            assert!(
                foreign_sealer().open(p, text).is_none(),
                "opened under a foreign key"
            );
            assert_eq!(rotated_sealer().open(p, text), Some(plain));
        }
    }

    let sealed = s.seal(p, rest).expect("seals");
    assert_eq!(s.open(p, &sealed).as_deref(), Some(rest));
    assert_eq!(rotated_sealer().open(p, &sealed).as_deref(), Some(rest));
    assert!(s.open(other, &sealed).is_none());
    assert!(foreign_sealer().open(p, &sealed).is_none());
    let resealed = rotated_sealer().seal(p, rest).expect("seals");
    assert!(resealed.starts_with("k2."));
    assert!(
        s.open(p, &resealed).is_none(),
        "k2 is not known before the rotation"
    );

    // One character changed, anywhere after the key id.
    let mut bytes = sealed.into_bytes();
    let i = 3 + usize::from(ctl >> 3) % (bytes.len() - 3);
    let pos = B64.iter().position(|b| *b == bytes[i]).expect("base64url");
    bytes[i] = B64[(pos + 1 + usize::from(ctl) % 63) % 64];
    let changed = String::from_utf8(bytes).expect("ASCII");
    assert!(
        s.open(p, &changed).is_none(),
        "opened after a change at {i}"
    );
});
