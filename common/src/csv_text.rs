//! CSV text as the operator's and the engineer's tools read it (`import-buckets`, `tally-agent
//! replay`): with the `csv` crate, so quoted fields (a comma inside one), a byte-order mark and
//! CRLF line ends read as they should; fields trimmed; lines starting with `#` skipped.

/// Each non-empty record of `text` with its line number, or what is wrong at that line.
pub fn records(text: &str) -> Vec<Result<(u64, Vec<String>), String>> {
    // Stripped here, so that the reader's byte offsets are offsets into `text`.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    reader
        .records()
        .enumerate()
        .filter_map(|(i, record)| {
            let line = |p: Option<&csv::Position>| {
                p.and_then(|p| usize::try_from(p.byte()).ok()).map_or(i as u64 + 1, |at| line_at(text, at))
            };
            match record {
                Err(e) => Some(Err(format!("line {}: {e}", line(e.position())))),
                Ok(r) if r.iter().all(str::is_empty) => None,
                Ok(r) => Some(Ok((line(r.position()), r.iter().map(str::to_owned).collect()))),
            }
        })
        .collect()
}

/// The line of the record the reader placed at byte `at`: the reader's own line count goes astray
/// on CRLF and comments, and its offset is where the previous record's terminator began, so the
/// line ends, blank lines and comments from there are skipped first.
fn line_at(text: &str, mut at: usize) -> u64 {
    while let Some(rest) = text.get(at..) {
        if rest.starts_with(['\r', '\n']) {
            at += 1;
        } else if rest.starts_with('#') {
            at += rest.find('\n').unwrap_or(rest.len());
        } else {
            break;
        }
    }
    text.get(..at).map_or(0, |before| before.matches('\n').count()) as u64 + 1
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
}
