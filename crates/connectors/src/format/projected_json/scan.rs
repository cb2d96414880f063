//! A strict JSON scanner over one batch of JSON Lines.
//!
//! It reads RFC 8259 JSON and nothing looser: one comma between members,
//! numbers as the grammar writes them, escapes that are complete. arrow-json
//! reads a superset (it skips stray commas, reads `1.2.3` as number text, and
//! its records may span lines), so whatever this scanner accepts arrow-json
//! accepts too, and anything else is a [`Decline`]: the batch goes to
//! arrow-json, which decides whether it holds a bad record. That is what
//! keeps the two decoders' results identical.
//!
//! The scanner works on bytes and stops only at ASCII ones; the caller
//! checks the batch's bytes as UTF-8 once, as arrow-json checks its strings.

/// This decoder does not read the batch as written; arrow-json decides.
/// Not an error of the record: arrow-json may well read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decline;

/// The outcome of a scanning step.
pub type Scan<T> = Result<T, Decline>;

/// Objects and arrays nested deeper than this are left to arrow-json (and
/// the refusal of records nested too deep).
const MAX_DEPTH: u32 = 64;

/// One JSON value as the column decoders see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A string's bytes between its quotes; `escaped` when they hold
    /// backslash escapes still to be resolved (see [`unescape`]).
    Str {
        raw: &'a [u8],
        escaped: bool,
    },
    /// A number's text as written (ASCII, by the grammar).
    Number(&'a [u8]),
    True,
    False,
    Null,
    /// An object or an array (checked, not materialised).
    Nested,
}

/// A position in a batch's bytes.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The bytes not read yet.
    #[inline(always)]
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos.min(self.bytes.len())..]
    }

    /// The bytes read since `start`.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.bytes[start..self.pos]
    }

    /// Moves past `n` bytes the caller has matched.
    #[inline(always)]
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Takes the next byte if it is `expected`.
    #[inline]
    pub fn eat(&mut self, expected: u8) -> bool {
        let hit = self.peek() == Some(expected);
        self.pos += hit as usize;
        hit
    }

    /// Takes `expected` or declines.
    #[inline]
    pub fn expect(&mut self, expected: u8) -> Scan<()> {
        if self.eat(expected) {
            Ok(())
        } else {
            Err(Decline)
        }
    }

    /// Skips whitespace inside a record. A line break is not skipped: a
    /// record is one line, and one that goes on past its line is declined.
    #[inline]
    pub fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips whitespace and blank lines between records.
    pub fn skip_blank(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.pos += 1;
        }
    }

    /// The rest of a string whose opening quote was taken: its bytes and
    /// whether they hold escapes. A string running past its line declines.
    #[inline(always)]
    pub fn string(&mut self) -> Scan<(&'a [u8], bool)> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            self.pos = string_stop(self.bytes, self.pos).ok_or(Decline)?;
            match self.bytes[self.pos] {
                b'"' => {
                    let raw = &self.bytes[start..self.pos];
                    self.pos += 1;
                    return Ok((raw, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    self.escape()?;
                }
                _ => return Err(Decline),
            }
        }
    }

    /// One escape after its backslash. `\u` escapes of surrogates are left
    /// to arrow-json, which pairs them.
    fn escape(&mut self) -> Scan<()> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                let hex = self.bytes.get(self.pos + 1..self.pos + 5).ok_or(Decline)?;
                let code = hex4(hex)?;
                if (0xD800..0xE000).contains(&code) {
                    return Err(Decline);
                }
                self.pos += 5;
                Ok(())
            }
            _ => Err(Decline),
        }
    }

    /// A number as the JSON grammar writes it,
    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, starting at its
    /// first byte. A number followed by more number characters (`01`,
    /// `1.2.3`) declines: arrow-json would read them as one text.
    #[inline(always)]
    pub fn number(&mut self) -> Scan<&'a [u8]> {
        let start = self.pos;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Decline),
        }
        if self.eat(b'.') {
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.some_digits()?;
        }
        if matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            return Err(Decline);
        }
        Ok(&self.bytes[start..self.pos])
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Scan<()> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            Err(Decline)
        } else {
            Ok(())
        }
    }

    /// The rest of `word` after its first byte, which was taken.
    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        let end = self.pos + word.len() - 1;
        if self.bytes.get(self.pos..end) == Some(&word[1..]) {
            self.pos = end;
            Ok(())
        } else {
            Err(Decline)
        }
    }

    /// The value starting here (after any whitespace was skipped). Kept
    /// inline, so a scalar's parts stay in registers; only objects and
    /// arrays go through the (recursive) nested scan.
    #[inline(always)]
    pub fn value(&mut self) -> Scan<Value<'a>> {
        self.value_at(0)
    }

    #[inline(always)]
    fn value_at(&mut self, depth: u32) -> Scan<Value<'a>> {
        let first = self.peek().ok_or(Decline)?;
        match first {
            b'"' => {
                self.pos += 1;
                let (raw, escaped) = self.string()?;
                Ok(Value::Str { raw, escaped })
            }
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            b't' => {
                self.pos += 1;
                self.literal(b"true").map(|_| Value::True)
            }
            b'f' => {
                self.pos += 1;
                self.literal(b"false").map(|_| Value::False)
            }
            b'n' => {
                self.pos += 1;
                self.literal(b"null").map(|_| Value::Null)
            }
            b'{' | b'[' => self.nested(depth).map(|_| Value::Nested),
            _ => Err(Decline),
        }
    }

    /// An object or array starting here, checked and skipped.
    #[inline(never)]
    fn nested(&mut self, depth: u32) -> Scan<()> {
        if depth >= MAX_DEPTH {
            return Err(Decline);
        }
        let first = self.bytes[self.pos];
        self.pos += 1;
        if first == b'{' {
            self.object_body(depth + 1)
        } else {
            self.array_body(depth + 1)
        }
    }

    /// The members of an object whose `{` was taken, through its `}`.
    fn object_body(&mut self, depth: u32) -> Scan<()> {
        self.skip_space();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.expect(b'"')?;
            self.string()?;
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            self.value_at(depth)?;
            self.skip_space();
            if self.eat(b'}') {
                return Ok(());
            }
            self.expect(b',')?;
            self.skip_space();
        }
    }

    /// The elements of an array whose `[` was taken, through its `]`.
    fn array_body(&mut self, depth: u32) -> Scan<()> {
        self.skip_space();
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            self.value_at(depth)?;
            self.skip_space();
            if self.eat(b']') {
                return Ok(());
            }
            self.expect(b',')?;
            self.skip_space();
        }
    }
}

/// Four hex digits as a number.
fn hex4(hex: &[u8]) -> Scan<u32> {
    hex.iter().try_fold(0u32, |acc, &b| {
        let digit = (b as char).to_digit(16).ok_or(Decline)?;
        Ok((acc << 4) | digit)
    })
}

/// Where the bytes from `from` on first hold a quote, a backslash or a
/// line break: eight bytes a step, since record strings are short (a
/// byte-at-a-time loop or a SIMD search's setup cost more on them).
#[inline]
fn string_stop(bytes: &[u8], mut from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // the high bit of each byte of `word` equal to `b`; only the lowest set
    // bit is exact (a borrow may mark bytes above it), and only it is used
    let equal = |word: u64, b: u8| {
        let x = word ^ (ONES * b as u64);
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    while let Some(eight) = bytes.get(from..from + 8) {
        let word = u64::from_le_bytes(eight.try_into().ok()?);
        let hits = equal(word, b'"') | equal(word, b'\\') | equal(word, b'\n');
        if hits != 0 {
            return Some(from + (hits.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    bytes[from..]
        .iter()
        .position(|b| matches!(b, b'"' | b'\\' | b'\n'))
        .map(|i| from + i)
}

/// The bytes of a string the scanner accepted, its escapes resolved into
/// `out` (as arrow-json resolves them).
pub fn unescape<'s>(raw: &'s [u8], escaped: bool, out: &'s mut Vec<u8>) -> &'s [u8] {
    if !escaped {
        return raw;
    }
    out.clear();
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&b| b == b'\\') {
        out.extend_from_slice(&rest[..i]);
        let mut taken = 2;
        match rest[i + 1] {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                // checked by the scanner: four hex digits, not a surrogate
                let value = hex4(&rest[i + 2..i + 6]).unwrap_or(0xFFFD);
                let c = char::from_u32(value).unwrap_or('\u{FFFD}');
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                taken = 6;
            }
            // '"', '\\' and '/' stand for themselves
            other => out.push(other),
        }
        rest = &rest[i + taken..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Scan<Value<'_>> {
        let mut cursor = Cursor::new(text.as_bytes());
        let v = cursor.value()?;
        // the value ends where the text does, or before a delimiter
        match cursor.peek() {
            None | Some(b',' | b'}' | b']' | b' ') => Ok(v),
            _ => Err(Decline),
        }
    }

    #[test]
    fn numbers_are_read_as_the_grammar_writes_them() {
        for good in ["0", "-0", "12", "1.5", "-1.5e10", "2E-3", "7e+2"] {
            assert_eq!(value(good), Ok(Value::Number(good.as_bytes())), "{good}");
        }
        for bad in ["01", "1.", ".5", "1.2.3", "-", "1e", "1e+", "+1", "1-2"] {
            assert_eq!(value(bad), Err(Decline), "{bad}");
        }
    }

    #[test]
    fn strings_keep_their_text_and_say_whether_they_are_escaped() {
        assert_eq!(
            value(r#""abc""#),
            Ok(Value::Str {
                raw: b"abc",
                escaped: false
            })
        );
        assert_eq!(
            value(r#""a\"b""#),
            Ok(Value::Str {
                raw: br#"a\"b"#,
                escaped: true
            })
        );
        let mut out = Vec::new();
        assert_eq!(
            unescape(br#"a\"b\\c\/d\n\u00e9\t"#, true, &mut out),
            "a\"b\\c/d\né\t".as_bytes()
        );
        // incomplete or unknown escapes, surrogates and line breaks decline
        for bad in [
            r#""a\x""#,
            r#""\u12""#,
            r#""\ud83d\ude00""#,
            "\"a\nb\"",
            "\"open",
        ] {
            assert_eq!(value(bad), Err(Decline), "{bad}");
        }
    }

    #[test]
    fn nested_values_are_checked_strictly() {
        assert_eq!(
            value(r#"{"a": [1, {"b": null}], "c": "}"}"#),
            Ok(Value::Nested)
        );
        assert_eq!(value("[]"), Ok(Value::Nested));
        for bad in [
            r#"{"a": 1,}"#,
            r#"[1,,2]"#,
            r#"{"a" 1}"#,
            r#"[1 2]"#,
            "[tru]",
        ] {
            assert_eq!(value(bad), Err(Decline), "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(value(&deep), Err(Decline));
    }

    #[test]
    fn a_string_ends_at_its_first_quote_however_long() {
        for len in 0..40 {
            let text = format!("\"{}\" , \"x\"", "a".repeat(len));
            let expected = "a".repeat(len);
            assert_eq!(
                value(&text),
                Ok(Value::Str {
                    raw: expected.as_bytes(),
                    escaped: false
                }),
                "{len}"
            );
        }
    }

    #[test]
    fn literals_are_whole_words() {
        assert_eq!(value("true"), Ok(Value::True));
        assert_eq!(value("false"), Ok(Value::False));
        assert_eq!(value("null"), Ok(Value::Null));
        assert_eq!(value("nul"), Err(Decline));
        assert_eq!(value("fals"), Err(Decline));
    }
}
