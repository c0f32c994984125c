//! `iothub twin …`.

use iothub_registry::TwinPatch;
use iothub_registry::models::Twin;

use super::Context;
use super::identity;
use crate::cli::TwinCommand;
use crate::error::{CliError, Result};
use crate::values::Section;

/// Runs `twin …`.
pub(crate) async fn run(cx: &Context, command: TwinCommand) -> Result<()> {
    match command {
        TwinCommand::Show { target } => {
            let registry = cx.registry()?;
            let twin = match target.module {
                Some(module) => registry.get_module_twin(target.device_id, module).await?,
                None => registry.get_twin(target.device_id).await?,
            };
            cx.printer.print(twin)
        }
        TwinCommand::Update {
            target,
            tags,
            desired,
            set,
            etag,
        } => {
            // Only what was given goes into the PATCH; the twin is never read and sent back
            // whole, so concurrent writers of other keys are not overwritten.
            let mut patch = TwinPatch::new();
            for (name, value) in tags.into_iter().flatten() {
                patch = patch.tag(name, value);
            }
            for (name, value) in desired.into_iter().flatten() {
                patch = patch.desired(name, value);
            }
            for s in set {
                patch = match s.section {
                    Section::Tags => patch.tag_at(s.path, s.value),
                    Section::Desired => patch.desired_at(s.path, s.value),
                };
            }
            if patch.is_empty() {
                return Err(CliError::usage(
                    "nothing to update: give --tags, --desired or --set",
                ));
            }
            let registry = cx.registry()?;
            let if_match = identity::if_match_or_any(etag);
            let twin = match target.module {
                Some(module) => {
                    registry
                        .update_module_twin(target.device_id, module, patch, if_match)
                        .await?
                }
                None => {
                    registry
                        .update_twin(target.device_id, patch, if_match)
                        .await?
                }
            };
            cx.printer.print(twin)
        }
        TwinCommand::Replace { target, json, etag } => {
            let twin: Twin = serde_json::from_value(json.into())
                .map_err(|e| CliError::usage(format!("--json is not a twin: {e}")))?;
            let registry = cx.registry()?;
            let if_match = identity::if_match_or_any(etag);
            let twin = match target.module {
                Some(module) => {
                    registry
                        .replace_module_twin(target.device_id, module, twin, if_match)
                        .await?
                }
                None => {
                    registry
                        .replace_twin(target.device_id, twin, if_match)
                        .await?
                }
            };
            cx.printer.print(twin)
        }
    }
}
