#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = dsv4_gguf::GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    // Reading every byte of every tensor makes an out-of-bounds slice fault here rather than
    // in a later user.
    let mut acc = 0u8;
    for t in f.tensors() {
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.n_bytes());
        assert!(f.data_start() + t.offset() + t.n_bytes() <= f.file_size());
        acc ^= d.iter().fold(0, |a, &b| a ^ b);
    }
    for (k, v) in f.metadata() {
        std::hint::black_box((k, v.as_f64(), v.as_str_array()));
    }
    std::hint::black_box(acc);
});
