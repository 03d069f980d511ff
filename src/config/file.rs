//! The settings file, `kiln.toml` (or `--config FILE`, `KILN_CONFIG`): the layer between the defaults
//! and the `KILN_*` variables. Its keys are the variables' names without `KILN_`, in lower case
//! (`database_url = "postgres://…"`); a flag wins over a variable, a variable over the file, the file
//! over the default. Any setting may instead be read from a file, as Docker and Kubernetes hand out
//! secrets: the variable `KILN_ADMIN_TOKEN_FILE=/run/secrets/admin` or the key
//! `admin_token_file = "/run/secrets/admin"`.
//!
//! [`apply`] puts what the file and the `*_FILE` variables say into the environment before the command
//! line is parsed, so every command reads one set of typed settings, whichever layer a value came from.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// The variable, and `--config` the flag, that name the settings file; empty: no file.
pub const CONFIG_VAR: &str = "KILN_CONFIG";
/// The settings file read from the working folder when neither names one.
pub const DEFAULT_FILE: &str = "kiln.toml";
/// Largest settings file or secret file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Every setting's variable, as the commands declare them (`env = "KILN_…"` on a flag).
pub fn settings(command: &clap::Command) -> BTreeSet<String> {
    fn walk(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|e| e.to_str())
                && name.starts_with("KILN_")
                && name != CONFIG_VAR
            {
                into.insert(name.to_string());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut all = BTreeSet::new();
    walk(command, &mut all);
    all
}

/// A setting's key in the settings file: `KILN_DATABASE_URL` is `database_url`.
pub fn key_of(variable: &str) -> String {
    variable
        .strip_prefix("KILN_")
        .unwrap_or(variable)
        .to_ascii_lowercase()
}

fn variable_of(key: &str) -> String {
    format!("KILN_{}", key.to_ascii_uppercase())
}

/// Sets, for the command line's parser to read, each setting that a `KILN_*_FILE` variable or the
/// settings file gives and no `KILN_*` variable does. Returns the settings file read, if any.
///
/// It changes the process's environment, so it must run before any other thread starts.
pub fn apply(command: &clap::Command, args: &[OsString]) -> Result<Option<PathBuf>> {
    let known = settings(command);
    let mut values: Vec<(String, String)> = Vec::new();
    for (name, path) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(variable) = name.strip_suffix("_FILE") else {
            continue;
        };
        if !known.contains(variable) {
            continue;
        }
        if std::env::var_os(variable).is_some() {
            bail!("{variable} and {name} are both set: keep one");
        }
        let path = PathBuf::from(path);
        let value = read_value_file(&path).with_context(|| name.to_string())?;
        values.push((variable.to_string(), value));
    }
    let file = settings_file(args)?;
    if let Some(path) = &file {
        for (variable, value) in read_settings_file(path, &known)? {
            let set_already =
                std::env::var_os(&variable).is_some() || values.iter().any(|(v, _)| *v == variable);
            if !set_already {
                values.push((variable, value));
            }
        }
    }
    for (variable, value) in values {
        // SAFETY: the caller runs this before any other thread exists, so nothing reads the
        // environment at the same time.
        unsafe { std::env::set_var(variable, value) };
    }
    Ok(file)
}

/// The settings file: `--config FILE` on the command line, else `KILN_CONFIG`, else `kiln.toml` in the
/// working folder when there is one. A file named by the first two must exist.
fn settings_file(args: &[OsString]) -> Result<Option<PathBuf>> {
    let mut named = None;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            let value = rest
                .next()
                .ok_or_else(|| anyhow!("--config needs a file"))?;
            named = Some(PathBuf::from(value));
        } else if let Some(value) = arg.strip_prefix("--config=") {
            named = Some(PathBuf::from(value));
        }
    }
    let named = named.or_else(|| std::env::var_os(CONFIG_VAR).map(PathBuf::from));
    match named {
        Some(path) if path.as_os_str().is_empty() => Ok(None),
        Some(path) if !path.is_file() => bail!(
            "the settings file {} does not exist (from --config or {CONFIG_VAR})",
            path.display()
        ),
        Some(path) => Ok(Some(path)),
        None => Ok(Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file())),
    }
}

/// The settings a file gives, as `(variable, value)`; an unknown key, a key given twice (directly
/// and as `_file`) or a value that is not a string, number or boolean is an error naming it.
pub fn read_settings_file(path: &Path, known: &BTreeSet<String>) -> Result<Vec<(String, String)>> {
    let text = read_limited(path)?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut values: Vec<(String, String)> = Vec::new();
    for (key, value) in table {
        let in_file = key
            .strip_suffix("_file")
            .filter(|base| known.contains(&variable_of(base)));
        let variable = variable_of(in_file.unwrap_or(&key));
        if key
            .bytes()
            .any(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            || !known.contains(&variable)
        {
            let keys: Vec<String> = known.iter().map(|v| key_of(v)).collect();
            let hint = crate::domain::closest(&key, keys.iter().map(String::as_str))
                .map(|k| format!("; did you mean `{k}`?"))
                .unwrap_or_default();
            bail!(
                "{}: unknown setting `{key}`{hint} (docs/configuration.md lists them)",
                path.display()
            );
        }
        if values.iter().any(|(v, _)| *v == variable) {
            bail!(
                "{}: `{}` is given twice (directly and as `{}_file`)",
                path.display(),
                key_of(&variable),
                key_of(&variable)
            );
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{}: `{key}` must be a string, a number or true/false, not {}",
                path.display(),
                other.type_str()
            ),
        };
        let value = match in_file {
            Some(_) => {
                // A relative path is read from the settings file's folder.
                let secret = path.parent().unwrap_or(Path::new(".")).join(&text);
                read_value_file(&secret).with_context(|| format!("{}: `{key}`", path.display()))?
            }
            None => text,
        };
        values.push((variable, value));
    }
    Ok(values)
}

/// A value kept in a file of its own: its text without the final line break.
fn read_value_file(path: &Path) -> Result<String> {
    let text = read_limited(path)?;
    Ok(text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_string())
}

fn read_limited(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{} is {size} bytes; the most read is {MAX_FILE_BYTES}",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
