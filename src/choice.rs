//! Closed sets of named options (criteria, fusions, splits, devices, ...): each variant has one
//! spelling, which the command line parses and reports and errors print, without tying the
//! library to a command-line parser. [`choices!`](crate::choices) implements it for an enum.

pub trait Choice: Copy + Send + Sync + 'static {
    /// Every variant, in the order help texts list them.
    const ALL: &'static [Self];
    /// The variant's spelling.
    fn name(self) -> &'static str;
    /// The variant spelled `text`, if any.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == text)
    }
}

/// `choices!(Fusion { Vote => "vote", Union => "union" })` implements [`Choice`] for an enum.
#[macro_export]
macro_rules! choices {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::choice::Choice for $ty {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    /// Every spelling parses back to its variant, and the spellings are the command line's
    /// (kebab-case, as clap's derive spelled them).
    #[test]
    fn names_round_trip() {
        use crate::prune::score::Strategy;
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.name()), Some(*s));
        }
        assert_eq!(Strategy::PerTask.name(), "per-task");
        assert_eq!(Strategy::parse("pertask"), None);
        assert_eq!(crate::device::DeviceChoice::ALL.len(), 3);
    }
}
