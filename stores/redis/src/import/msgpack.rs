//! A MessagePack reader for Flask-Session's records (msgspec's output): maps with string keys,
//! strings, numbers, booleans, nil and arrays, read into JSON values. Binary data, extension
//! types and non-string keys have no JSON form and make the record unreadable. Bounded: nesting
//! deeper than 64 levels or a length past the input is refused, never trusted.

use serde_json::{Map, Number, Value};

/// Deepest nesting read.
const MAX_DEPTH: usize = 64;

/// The value `bytes` holds, if it is exactly one supported MessagePack value.
pub(crate) fn decode(bytes: &[u8]) -> Option<Value> {
    let mut reader = Reader { bytes, at: 0 };
    let value = reader.value(0)?;
    (reader.at == bytes.len()).then_some(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn len(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.be(n)?).ok()
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let tag = *self.take(1)?.first()?;
        Some(match tag {
            0x00..=0x7f => Value::from(tag),
            0x80..=0x8f => self.map(usize::from(tag & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(tag & 0x0f), depth)?,
            0xa0..=0xbf => self.string(usize::from(tag & 0x1f))?,
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => {
                let bits = u32::try_from(self.be(4)?).ok()?;
                Value::Number(Number::from_f64(f64::from(f32::from_bits(bits)))?)
            }
            0xcb => Value::Number(Number::from_f64(f64::from_bits(self.be(8)?))?),
            0xcc => Value::from(self.be(1)?),
            0xcd => Value::from(self.be(2)?),
            0xce => Value::from(self.be(4)?),
            0xcf => Value::from(self.be(8)?),
            // Two's complement of the width read, widened.
            0xd0 => Value::from(i64::from(i8::from_be_bytes(self.take(1)?.try_into().ok()?))),
            0xd1 => Value::from(i64::from(i16::from_be_bytes(
                self.take(2)?.try_into().ok()?,
            ))),
            0xd2 => Value::from(i64::from(i32::from_be_bytes(
                self.take(4)?.try_into().ok()?,
            ))),
            0xd3 => Value::from(i64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            0xd9 => {
                let n = self.len(1)?;
                self.string(n)?
            }
            0xda => {
                let n = self.len(2)?;
                self.string(n)?
            }
            0xdb => {
                let n = self.len(4)?;
                self.string(n)?
            }
            0xdc => {
                let n = self.len(2)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.len(4)?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.len(2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.len(4)?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::from(i64::from(i8::from_be_bytes([tag]))),
            // Binary, extension types, the unused 0xc1.
            _ => return None,
        })
    }

    fn string(&mut self, n: usize) -> Option<Value> {
        Some(Value::String(
            std::str::from_utf8(self.take(n)?).ok()?.to_owned(),
        ))
    }

    fn array(&mut self, n: usize, depth: usize) -> Option<Value> {
        // Each element is at least one byte: a length past the input is refused up front.
        if n > self.bytes.len() - self.at {
            return None;
        }
        (0..n)
            .map(|_| self.value(depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array)
    }

    fn map(&mut self, n: usize, depth: usize) -> Option<Value> {
        if n > self.bytes.len() - self.at {
            return None;
        }
        let mut map = Map::new();
        for _ in 0..n {
            let Value::String(key) = self.value(depth + 1)? else {
                return None;
            };
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Some(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fixmap of `pairs`, each key a fixstr, each value already encoded.
    fn map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0x80 | u8::try_from(pairs.len()).unwrap()];
        for (k, v) in pairs {
            out.push(0xa0 | u8::try_from(k.len()).unwrap());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    #[test]
    fn what_msgspec_writes_reads_as_json() {
        // msgspec.msgpack.encode({"_permanent": True, "user_id": 7, "n": -3, "name": "Ada",
        // "tags": ["a"], "big": 70000, "pi": 1.5, "none": None})
        let bytes = map(&[
            ("_permanent", &[0xc3]),
            ("user_id", &[0x07]),
            ("n", &[0xfd]),
            ("name", b"\xa3Ada"),
            ("tags", b"\x91\xa1a"),
            ("big", &[0xce, 0x00, 0x01, 0x11, 0x70]),
            ("pi", &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
            ("none", &[0xc0]),
        ]);
        assert_eq!(
            decode(&bytes),
            Some(
                json!({"_permanent": true, "user_id": 7, "n": -3, "name": "Ada",
                        "tags": ["a"], "big": 70000, "pi": 1.5, "none": null})
            )
        );
    }

    #[test]
    fn hostile_input_is_refused_not_trusted() {
        assert_eq!(decode(b""), None);
        assert_eq!(
            decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            None,
            "a huge map count"
        );
        assert_eq!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']),
            None,
            "a huge string"
        );
        assert_eq!(decode(&[0xc4, 0x01, 0x00]), None, "binary");
        assert_eq!(decode(&[0x81, 0x01, 0x02]), None, "a number as key");
        assert_eq!(decode(&[0xa1, 0xff]), None, "not UTF-8");
        assert_eq!(decode(&[0x01, 0x02]), None, "trailing bytes");
        assert_eq!(decode(&vec![0x91; 100_000]), None, "too deep");
    }
}
