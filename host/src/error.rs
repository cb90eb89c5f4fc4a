//! One way to print an error.
//!
//! Every error type of this crate says what failed at its own level and never repeats
//! its `#[source]` in its message; [`error_chain`] prints the whole chain on one line,
//! which is how logs, events, `lastFailure` and the command line show errors.

use std::error::Error;

/// An error and its causes, joined by `": "`.
///
/// Errors of other crates sometimes end their message with their source's (kube's
/// `HyperError: {0}`, say): a cause whose text already ends the message is skipped,
/// so that such a chain does not say the same thing twice.
pub fn error_chain(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// `text` on one line: every run of whitespace (newlines included) becomes one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle says: inner")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn the_chain_is_joined_and_a_repeated_tail_is_said_once() {
        assert_eq!(error_chain(&Outer(Middle(Inner))), "outer: middle says: inner");
        assert_eq!(error_chain(&Inner), "inner");
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(one_line("  a\n\tb   c \n"), "a b c");
    }
}
