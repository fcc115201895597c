//! `coolmq completions <shell>`: a completion script generated from the command definitions
//! (clap_complete), so it never falls behind the options.

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::{Cli, CliError};

#[derive(Debug, Args)]
pub struct Opts {
    /// The shell: bash, zsh, fish, powershell or elvish. Install e.g. with
    /// `coolmq completions bash > ~/.local/share/bash-completion/completions/coolmq`.
    shell: Shell,
}

pub fn run(o: Opts, out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let mut command = Cli::command();
    let mut buffer = Vec::new();
    clap_complete::generate(o.shell, &mut command, "coolmq", &mut buffer);
    out.write_all(&buffer).map_err(CliError::io)
}
