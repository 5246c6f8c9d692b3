//! `declare_options!`: one entry per option, from which the flag, the
//! environment variable, the file key, the default and the merge are written.

/// Declares the node's options, each once:
///
/// ```text
/// /// What it is for (the flag's help and the field's documentation).
/// #[arg(env = "FERROCAST_NAME", value_name = "N")]   // the rest of the clap attributes
/// #[serde(with = "humantime_serde")]                  // serde attributes, if any
/// name: Type = default,                               // set by default
/// name: Type = default => "words",                    // set; --help says `words`
/// name: Type,                                         // unset by default: `Option<Type>`
/// name: Type => "words",                              // unset; --help says `words`
/// ```
///
/// and writes from them:
/// - `Overrides`: the flags (with their environment variables), every one an
///   `Option`, so that a flag not given leaves the file's value in place; the
///   help is the doc text plus `[default: …]` ([`super::help::flag_help`]);
/// - `Config`: the file's keys and the effective configuration, with
///   `Default` built from the declared defaults and `apply`, which lays the
///   given flags over it.
macro_rules! declare_options {
    (@type $ty:ty) => { Option<$ty> };
    (@type $ty:ty, $default:expr) => { $ty };
    (@default) => { None };
    (@default $default:expr) => { $default };
    (@value $value:expr) => { Some($value) };
    (@value $value:expr, $default:expr) => { $value };
    (@shown) => { None };
    (@shown $shown:literal) => { Some($shown) };
    ($(
        $(#[doc = $doc:literal])+
        #[arg($($arg:tt)*)]
        $(#[serde($($serde:tt)*)])*
        $name:ident: $ty:ty $(= $default:expr)? $(=> $shown:literal)?
    ),+ $(,)?) => {
        /// The options given as flags or `FERROCAST_*` variables (clap reads
        /// the variable of a flag not given); `None` when neither is.
        #[derive(Debug, Default, clap::Args)]
        pub(crate) struct Overrides {
            $(
                #[arg(
                    long,
                    help = super::help::flag_help(
                        concat!($($doc, "\n"),+),
                        stringify!($name),
                        declare_options!(@shown $($shown)?),
                    ),
                    $($arg)*
                )]
                pub(crate) $name: Option<$ty>,
            )+
        }

        /// The effective configuration, and the shape of the TOML file: the
        /// keys are the flags' names with `_` for `-`.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub(crate) struct Config {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])*
                pub(crate) $name: declare_options!(@type $ty $(, $default)?),
            )+
            /// Settings per namespace, by name (file only: `[namespaces.<name>]`).
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            pub(crate) namespaces: BTreeMap<String, NamespaceConfig>,
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $($name: declare_options!(@default $($default)?),)+
                    namespaces: BTreeMap::new(),
                }
            }
        }

        impl Config {
            /// Lays the options given as flags or variables over `self`.
            pub(super) fn apply(&mut self, given: &Overrides) {
                $(
                    if let Some(value) = &given.$name {
                        self.$name = declare_options!(@value value.clone() $(, $default)?);
                    }
                )+
            }
        }
    };
}

pub(super) use declare_options;
