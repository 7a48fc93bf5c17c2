//! Helpers shared by the benchmarks in `benches/` (this crate has no other library code).

/// The JSON data of a benchmark event: 256 bytes, `{"pad":"xxx…"}`.
pub fn payload() -> Vec<u8> {
    let mut s = String::from("{\"pad\":\"");
    while s.len() < 254 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn payload_is_256_bytes_of_json() {
        let p = super::payload();
        assert_eq!(p.len(), 256);
        assert_eq!(&p[..8], b"{\"pad\":\"");
        assert_eq!(&p[254..], b"\"}");
    }
}
