//! CSV text as the operator's and the engineer's tools read it (`import-buckets`, `tally-agent
//! replay`): one record a line, read as a stream (a file of any size in little memory), each line
//! parsed with `csv-core` (the `csv` crate's parser, one for the whole stream), so quoted fields (a
//! comma inside one), a byte-order mark and CRLF line ends read as they should; fields trimmed;
//! blank lines and lines starting with `#` skipped.
//! A line longer than [`MAX_LINE`] bytes is an error and is read past, never held; so is one
//! that is not UTF-8. Every error names its line.

use std::io::BufRead;

/// The longest line read, in bytes: far more than any record of these files needs.
pub const MAX_LINE: usize = 4_096;

/// Each non-empty record of `text` with its line number, or what is wrong at that line.
pub fn records(text: &str) -> Vec<Result<(u64, Vec<String>), String>> {
    Records::new(text.as_bytes()).collect()
}

/// The records of a stream, as [`records`] reads them; an I/O error ends it (after saying so).
#[derive(Debug)]
pub struct Records<R> {
    input: R,
    line: u64,
    buffer: Vec<u8>,
    ended: bool,
    parser: Parser,
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R) -> Self {
        Records { input, line: 0, buffer: Vec::with_capacity(256), ended: false, parser: Parser::default() }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<(u64, Vec<String>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.ended {
            self.line += 1;
            let n = self.line;
            let length = match read_line(&mut self.input, &mut self.buffer) {
                Ok(None) => return None,
                Ok(Some(length)) => length,
                Err(e) => {
                    self.ended = true;
                    return Some(Err(format!("line {n}: cannot be read: {e}")));
                }
            };
            if length > MAX_LINE {
                return Some(Err(format!("line {n}: {length} bytes long, more than the {MAX_LINE} a line may have")));
            }
            let mut bytes = self.buffer.as_slice();
            if n == 1 {
                bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text.trim(),
                Err(e) => return Some(Err(format!("line {n}: not UTF-8 (at byte {})", e.valid_up_to() + 1))),
            };
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            return Some(Ok((n, self.parser.fields(text))));
        }
        None
    }
}

/// Reads the next line into `buffer` (without its line end), keeping at most [`MAX_LINE`] + 1
/// bytes of it; returns its whole length, or `None` at the end of the input.
fn read_line(input: &mut impl BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    buffer.clear();
    let mut length = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((length > 0).then_some(length));
        }
        let (part, end) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        let room = (MAX_LINE + 1).saturating_sub(buffer.len());
        buffer.extend_from_slice(&part[..part.len().min(room)]);
        length += part.len();
        let used = end.unwrap_or(available.len());
        input.consume(used);
        if end.is_some() {
            if buffer.last() == Some(&b'\r') {
                buffer.pop();
                length -= 1;
            }
            return Ok(Some(length));
        }
    }
}

/// `csv-core`'s reader, and room for one line's fields.
#[derive(Debug)]
struct Parser {
    reader: csv_core::Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for Parser {
    fn default() -> Self {
        // (`csv_core::Reader::default()` has no delimiter.)
        Parser { reader: csv_core::Reader::new(), output: Vec::new(), ends: Vec::new() }
    }
}

impl Parser {
    /// The fields of one line, trimmed. An unclosed quote runs to the end of the line.
    fn fields(&mut self, line: &str) -> Vec<String> {
        use csv_core::ReadRecordResult;
        self.reader.reset();
        // A field is never longer than the line, and there is at most one more field than bytes.
        self.output.resize(line.len() + 1, 0);
        self.ends.resize(line.len() + 2, 0);
        let (mut input, mut written, mut fields) = (line.as_bytes(), 0, 0);
        // Twice at most: the line, then its end.
        for _ in 0..2 {
            // The ends count from the record's first byte, across calls.
            let (result, read, out, ended) =
                self.reader.read_record(input, &mut self.output[written..], &mut self.ends[fields..]);
            (input, written, fields) = (&input[read..], written + out, fields + ended);
            if !matches!(result, ReadRecordResult::InputEmpty) {
                break;
            }
        }
        let mut start = 0;
        self.ends[..fields]
            .iter()
            .map(|&end| {
                let field = String::from_utf8_lossy(&self.output[start..end]).trim().to_owned();
                start = end;
                field
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_a_bom_crlf_and_comments_read_as_they_should() {
        let text = "\u{feff}site,max\r\n# a comment\r\n\"hq, annex\" , 5\r\n\r\nbranch,6\n";
        let read: Vec<(u64, Vec<String>)> = records(text).into_iter().map(Result::unwrap).collect();
        let row = |line, a: &str, b: &str| (line, vec![a.to_owned(), b.to_owned()]);
        assert_eq!(read, [row(1, "site", "max"), row(3, "hq, annex", "5"), row(5, "branch", "6")]);
    }

    #[test]
    fn a_long_line_and_bad_utf8_are_errors_that_name_their_line_and_reading_goes_on() {
        let mut input = b"a,1\n".to_vec();
        input.extend(std::iter::repeat_n(b',', 10 * MAX_LINE));
        input.extend_from_slice(b"\nb,\xff\xfe\nc,3");
        let read: Vec<_> = Records::new(input.as_slice()).collect();
        assert_eq!(read[0], Ok((1, vec!["a".to_owned(), "1".to_owned()])));
        assert_eq!(read[1], Err(format!("line 2: 40960 bytes long, more than the {MAX_LINE} a line may have")));
        assert_eq!(read[2], Err("line 3: not UTF-8 (at byte 3)".to_owned()));
        assert_eq!(read[3], Ok((4, vec!["c".to_owned(), "3".to_owned()])), "the last line has no line end");
        assert_eq!(read.len(), 4);
    }

    /// A line read in pieces (a small buffer) is the same line.
    #[test]
    fn lines_split_across_reads_are_whole() {
        let text = "hq,2026-12-01T00:00:00Z,5\r\nbranch,2026-12-01T00:05:00Z,6\n";
        let small = std::io::BufReader::with_capacity(3, text.as_bytes());
        assert_eq!(Records::new(small).collect::<Vec<_>>(), records(text));
    }
}
