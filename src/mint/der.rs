//! Just enough DER to read a PKCS#8 `PrivateKeyInfo`'s algorithm and key, and to write one:
//! aws-lc parses the keys themselves, but only this tells an RSA-PSS key from an RSA key.

/// rsaEncryption, 1.2.840.113549.1.1.1.
pub const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-RSASSA-PSS, 1.2.840.113549.1.1.10.
pub const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
/// id-ecPublicKey, 1.2.840.10045.2.1.
pub const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// id-Ed25519, 1.3.101.112.
pub const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OBJECT_IDENTIFIER: u8 = 0x06;

/// Splits one tag-length-value off `input`: (tag, value, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The fields of a PrivateKeyInfo: (algorithm OID, privateKey).
fn pkcs8_fields(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (SEQUENCE, info, _) = read_tlv(der)? else {
        return None;
    };
    let (INTEGER, _version, rest) = read_tlv(info)? else {
        return None;
    };
    let (SEQUENCE, algorithm, rest) = read_tlv(rest)? else {
        return None;
    };
    let (OBJECT_IDENTIFIER, oid, _params) = read_tlv(algorithm)? else {
        return None;
    };
    let (OCTET_STRING, private_key, _attributes) = read_tlv(rest)? else {
        return None;
    };
    Some((oid, private_key))
}

/// The algorithm OID (its value bytes) of a PKCS#8 PrivateKeyInfo.
pub fn pkcs8_algorithm(der: &[u8]) -> Option<&[u8]> {
    pkcs8_fields(der).map(|(oid, _)| oid)
}

/// The inner private key (e.g. PKCS#1 RSAPrivateKey) of a PKCS#8 PrivateKeyInfo.
pub fn pkcs8_private_key(der: &[u8]) -> Option<&[u8]> {
    pkcs8_fields(der).map(|(_, key)| key)
}

/// A version-0 PrivateKeyInfo with algorithm `oid` (no parameters) around `private_key`.
pub fn pkcs8_wrap(oid: &[u8], private_key: &[u8]) -> Vec<u8> {
    let mut algorithm = Vec::new();
    write_tlv(&mut algorithm, OBJECT_IDENTIFIER, oid);
    let mut info = Vec::new();
    write_tlv(&mut info, INTEGER, &[0]);
    write_tlv(&mut info, SEQUENCE, &algorithm);
    write_tlv(&mut info, OCTET_STRING, private_key);
    let mut out = Vec::new();
    write_tlv(&mut out, SEQUENCE, &info);
    out
}

fn write_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_reads_back() {
        let key = vec![7u8; 300];
        let der = pkcs8_wrap(OID_RSASSA_PSS, &key);
        assert_eq!(pkcs8_algorithm(&der), Some(OID_RSASSA_PSS));
        assert_eq!(pkcs8_private_key(&der), Some(key.as_slice()));
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let der = pkcs8_wrap(OID_ED25519, &[1, 2, 3]);
        for cut in 0..der.len() {
            assert_eq!(pkcs8_private_key(&der[..cut]), None);
        }
        assert_eq!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
    }
}
