//! Stop strings over streamed text: text that might be the start of a stop string is held
//! back until it is known not to be, so a client never sees part of a stop string.

#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// All text generated so far.
    text: String,
    /// Bytes of `text` already released.
    emitted: usize,
}

/// What a chunk of new text produced.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to release now (may be empty while a partial match is held back).
    Continue(String),
    /// A stop string matched: the text before it, and generation must end.
    Stopped(String),
}

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Add newly decoded text.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        let search_from = self.emitted;
        self.text.push_str(delta);
        if self.stops.is_empty() {
            return StopOutcome::Continue(self.take_until(self.text.len()));
        }
        // A stop string can start in the held-back tail, which begins at `emitted`.
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|p| search_from + p)
            })
            .min();
        if let Some(at) = hit {
            let out = self.take_until(at);
            self.emitted = self.text.len();
            return StopOutcome::Stopped(out);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && self.text.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        let safe = (self.text.len() - hold).max(self.emitted);
        StopOutcome::Continue(self.take_until(safe))
    }

    /// Release everything held back (generation ended for another reason).
    pub fn flush(&mut self) -> String {
        self.take_until(self.text.len())
    }

    fn take_until(&mut self, end: usize) -> String {
        let out = self.text[self.emitted..end].to_string();
        self.emitted = end;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            match s.push(d) {
                StopOutcome::Continue(t) => out.push_str(&t),
                StopOutcome::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&s.flush());
        (out, false)
    }

    #[test]
    fn stop_split_across_deltas_is_never_emitted() {
        let mut s = StopStrings::new(vec!["###".into()]);
        assert_eq!(s.push("Hello #"), StopOutcome::Continue("Hello ".into()));
        assert_eq!(s.push("#"), StopOutcome::Continue(String::new()));
        assert_eq!(s.push("# tail"), StopOutcome::Stopped(String::new()));
    }

    #[test]
    fn false_alarm_is_released() {
        assert_eq!(run(&["###"], &["a #", "# b"]), ("a ## b".into(), false));
        assert_eq!(run(&["</s>"], &["x </", "p>"]), ("x </p>".into(), false));
    }

    #[test]
    fn earliest_stop_wins_and_text_before_it_is_kept() {
        assert_eq!(
            run(&["END", "ND"], &["abcEN", "Dxyz"]),
            ("abc".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["line\n", "\nnext"]), ("line".into(), true));
    }

    #[test]
    fn multibyte_text_and_stops() {
        assert_eq!(
            run(&["世界"], &["你好", "世", "界!"]),
            ("你好".into(), true)
        );
        assert_eq!(
            run(&["世界"], &["你好", "世", "人"]),
            ("你好世人".into(), false)
        );
    }
}
