//! `coolmq demo`: the story in `story.rs` (also `cargo run --example demo` in the repository).

use std::io::Write;

use crate::CliError;

use crate::story;

pub async fn run(_out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let config = story::demo_config()?;
    story::story(&config)
        .await
        .map_err(|e| CliError::msg(e.to_string()))
}
