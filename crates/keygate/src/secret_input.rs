//! Reading a secret (an OpenAI key) from standard input, never from the command line
//! (where `ps` and shell history would see it): the first line, trimmed; not echoed
//! when standard input is a terminal. Used by `keygate keys set-operator` and
//! `keygate admin operator-key set`.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::Context;
use secrecy::SecretString;
use zeroize::Zeroizing;

/// The most read: no key is longer (a line without end, `< /dev/zero`, stops here).
const MAX_LINE_BYTES: u64 = 4096;

/// Reads one line from standard input. On a terminal, echo is turned off *before*
/// `prompt` goes to stderr (so nothing typed once the prompt shows is echoed) and back
/// on afterwards, whatever happens. `example` is the piped form, for the error when
/// nothing came.
pub fn read_line(prompt: &str, example: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    let mut line = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        let mut err = std::io::stderr();
        {
            let _quiet = EchoOff::new(&stdin)?;
            write!(err, "{prompt}")?;
            err.flush()?;
            stdin
                .lock()
                .take(MAX_LINE_BYTES)
                .read_line(&mut line)
                .context("reading the key from the terminal")?;
        }
        writeln!(err)?;
    } else {
        stdin
            .lock()
            .take(MAX_LINE_BYTES)
            .read_line(&mut line)
            .context("reading the key from standard input")?;
    }
    let key = line.trim();
    if key.is_empty() {
        anyhow::bail!("no key on standard input: pipe it in, e.g. `{example}`");
    }
    Ok(SecretString::from(key.to_owned()))
}

/// Terminal echo turned off until dropped.
struct EchoOff {
    #[cfg(unix)]
    saved: rustix::termios::Termios,
}

impl EchoOff {
    #[cfg(unix)]
    fn new(stdin: &std::io::Stdin) -> anyhow::Result<Self> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(stdin, OptionalActions::Now, &quiet).context("turning terminal echo off")?;
        Ok(Self { saved })
    }

    #[cfg(not(unix))]
    fn new(_: &std::io::Stdin) -> anyhow::Result<Self> {
        anyhow::bail!("reading a key from a terminal needs a Unix terminal: pipe it in instead")
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
