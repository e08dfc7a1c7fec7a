//! The token cache's key: SHA-256 over length-prefixed parts, gathered in a stack buffer.
//!
//! A key has some twenty parts, most a few bytes long; giving each (and each length prefix) to
//! a digest context was two calls into the hash library per part, on top of the context's own
//! set-up (an allocation), which cost more than hashing the bytes (docs/benchmarks.md, "Where a
//! cached Check's CPU goes"). The digest is the same either way: SHA-256 of the same bytes.

/// The most a key's parts usually take (identity, credential and grants fingerprints, kid):
/// they are hashed in one call, with no digest context set up.
const BUFFER_BYTES: usize = 1024;

/// SHA-256 of length-prefixed parts: one call over a stack buffer, or, when the parts outgrow
/// it (very long identity fields), a digest context fed a buffer at a time.
pub(super) struct KeyDigest {
    context: Option<aws_lc_rs::digest::Context>,
    buffer: [u8; BUFFER_BYTES],
    filled: usize,
}

impl KeyDigest {
    pub(super) fn new() -> Self {
        Self {
            context: None,
            buffer: [0; BUFFER_BYTES],
            filled: 0,
        }
    }

    /// Adds one part: its length (8 bytes, big-endian), then its bytes.
    pub(super) fn part(&mut self, bytes: &[u8]) {
        self.push(&(bytes.len() as u64).to_be_bytes());
        self.push(bytes);
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.filled == BUFFER_BYTES {
                self.context
                    .get_or_insert_with(|| {
                        aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)
                    })
                    .update(&self.buffer);
                self.filled = 0;
            }
            let taken = (BUFFER_BYTES - self.filled).min(bytes.len());
            self.buffer[self.filled..self.filled + taken].copy_from_slice(&bytes[..taken]);
            self.filled += taken;
            bytes = &bytes[taken..];
        }
    }

    pub(super) fn finish(self) -> [u8; 32] {
        let rest = &self.buffer[..self.filled];
        let digest = match self.context {
            None => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rest),
            Some(mut context) => {
                context.update(rest);
                context.finish()
            }
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of the parts' byte stream: within the buffer (one call) and past it (a
    /// context fed buffer by buffer, parts straddling the buffer's end).
    #[test]
    fn the_digest_is_sha256_of_the_length_prefixed_parts() {
        for sizes in [
            &[0usize, 1, 7, 255, 43][..],
            &[0, 1, 7, 255, 1000, 1017, 2500, 3],
        ] {
            let mut buffered = KeyDigest::new();
            let mut stream = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let part = vec![i as u8; size];
                buffered.part(&part);
                stream.extend_from_slice(&(size as u64).to_be_bytes());
                stream.extend_from_slice(&part);
            }
            let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &stream);
            assert_eq!(buffered.finish().as_slice(), expected.as_ref(), "{sizes:?}");
        }
        let empty = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"");
        assert_eq!(KeyDigest::new().finish().as_slice(), empty.as_ref());
    }
}
