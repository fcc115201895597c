//! `coolmq demo`: the same story as `cargo run --example demo` (one source file).

use std::io::Write;

use crate::CliError;

#[path = "../../examples/demo.rs"]
mod story;

pub async fn run(_out: &mut (dyn Write + Send)) -> Result<(), CliError> {
    let config = story::demo_config()?;
    story::story(&config)
        .await
        .map_err(|e| CliError::msg(e.to_string()))
}
