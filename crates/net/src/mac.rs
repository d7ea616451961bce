//! MAC address text form: six colon-separated hex octets, as `ip link` prints them.

use crate::error::{Error, Result};

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::Invalid(format!("MAC address {s:?} (want xx:xx:xx:xx:xx:xx)"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for octet in mac.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

pub fn format_mac(mac: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mac = parse_mac("0A:1b:2c:3d:4e:ff").unwrap();
        assert_eq!(mac, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0xff]);
        assert_eq!(format_mac(mac), "0a:1b:2c:3d:4e:ff");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:ff:00",
            "0a-1b-2c-3d-4e-ff",
            "0a:1b:2c:3d:4e:f",
            "0a:1b:2c:3d:4e:fg",
            "+a:1b:2c:3d:4e:ff",
        ] {
            assert!(parse_mac(s).is_err(), "{s}");
        }
    }
}
