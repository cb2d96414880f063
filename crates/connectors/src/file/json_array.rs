//! A JSON array document read as JSON Lines, incrementally: each element
//! of the top-level array becomes one line, so a file of any size is read
//! with the memory of a chunk, and its elements are decoded, counted and
//! reported (element number for line number) like JSON Lines records.
//!
//! Only the array's structure is followed — nesting depth, strings and
//! their escapes — each element's text is passed on unchanged, so a
//! malformed element is one bad record for the decoder to report.

use std::io::{self, Read};

/// Reads a JSON array from `inner` (positioned anywhere before its `[`)
/// as newline-separated elements.
pub struct ArrayLines<R> {
    inner: R,
    input: Vec<u8>,
    pos: usize,
    /// Bytes of elements ready to hand out.
    out: Vec<u8>,
    out_pos: usize,
    started: bool,
    ended: bool,
    /// Depth inside the current element (0: between elements).
    depth: usize,
    in_element: bool,
    in_string: bool,
    escaped: bool,
}

impl<R: Read> ArrayLines<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            input: vec![0; 64 * 1024],
            pos: 0,
            out: Vec::new(),
            out_pos: 0,
            started: false,
            ended: false,
            depth: 0,
            in_element: false,
            in_string: false,
            escaped: false,
        }
    }

    /// Ends the current element with a line break.
    fn end_element(&mut self) {
        if self.in_element {
            self.out.push(b'\n');
            self.in_element = false;
        }
    }

    /// Follows the array's structure over `bytes`, copying elements out.
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.ended {
                return;
            }
            if !self.started {
                // everything before the opening bracket is whitespace
                self.started = b == b'[';
                continue;
            }
            if self.in_string {
                self.out.push(b);
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_element = true;
                    self.in_string = true;
                    self.out.push(b);
                }
                b'[' | b'{' => {
                    self.in_element = true;
                    self.depth += 1;
                    self.out.push(b);
                }
                b']' | b'}' if self.depth > 0 => {
                    self.depth -= 1;
                    self.out.push(b);
                }
                // the array's own end
                b']' => {
                    self.end_element();
                    self.ended = true;
                }
                b',' if self.depth == 0 => self.end_element(),
                // line breaks between tokens are whitespace; a line is one element
                // line breaks inside an element are whitespace (a line is one
                // element); around a top-level value whitespace is dropped
                b'\n' | b'\r' => {
                    if self.in_element && self.depth > 0 {
                        self.out.push(b' ');
                    }
                }
                _ if b.is_ascii_whitespace() && (!self.in_element || self.depth == 0) => {}
                _ => {
                    self.in_element = true;
                    self.out.push(b);
                }
            }
        }
    }
}

impl<R: Read> Read for ArrayLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.ended {
                return Ok(0);
            }
            let n = match self.inner.read(&mut self.input[self.pos..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                // an array cut short: what was read of its last element is passed on
                self.end_element();
                self.ended = true;
                continue;
            }
            let chunk = std::mem::take(&mut self.input);
            self.scan(&chunk[..n]);
            self.input = chunk;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::ArrayLines;
    use std::io::Read;

    fn lines(doc: &str) -> String {
        let mut out = String::new();
        // one byte at a time from the inner reader: state carries across reads
        let slow = doc
            .as_bytes()
            .chunks(1)
            .flatten()
            .copied()
            .collect::<Vec<u8>>();
        ArrayLines::new(std::io::Cursor::new(slow))
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn each_element_is_one_line_and_its_text_is_kept() {
        assert_eq!(
            lines(
                " [\n {\"a\": 1.50, \"s\": \"x, ]\\\"y\"},\n {\"a\": [1, {\"b\": 2}]}, 3, null ]\n"
            ),
            "{\"a\": 1.50, \"s\": \"x, ]\\\"y\"}\n{\"a\": [1, {\"b\": 2}]}\n3\nnull\n"
        );
        assert_eq!(lines("[]"), "");
        assert_eq!(lines("[{\"a\":\n1}]"), "{\"a\": 1}\n");
        // cut short: the last element is passed on for the decoder to judge
        assert_eq!(lines("[{\"a\": 1}, {\"a\""), "{\"a\": 1}\n{\"a\"\n");
    }
}
