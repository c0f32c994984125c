//! `iothub configuration create|show|list|delete`: automatic device management, through
//! the registry's `ConfigurationManager`.

use iothub_registry::models::Configuration;

use super::{Context, identity};
use crate::cli::ConfigurationCommand;
use crate::error::{CliError, Result};

/// Runs `configuration …`.
pub(crate) async fn run(cx: &Context, command: ConfigurationCommand) -> Result<()> {
    match command {
        ConfigurationCommand::Create {
            json,
            id,
            target_condition,
            priority,
        } => {
            let mut configuration: Configuration = serde_json::from_value(json.into())
                .map_err(|e| CliError::usage(format!("--json is not a configuration: {e}")))?;
            if id.is_some() {
                configuration.id = id;
            }
            if target_condition.is_some() {
                configuration.target_condition = target_condition;
            }
            if priority.is_some() {
                configuration.priority = priority;
            }
            let registry = cx.registry()?;
            let created = registry
                .configurations()
                .create_configuration(configuration)
                .await?;
            cx.printer.print(created)
        }
        ConfigurationCommand::Show { id } => {
            let registry = cx.registry()?;
            cx.printer
                .print(registry.configurations().get_configuration(id).await?)
        }
        ConfigurationCommand::List { top } => {
            let registry = cx.registry()?;
            cx.printer
                .print(registry.configurations().get_configurations(top).await?)
        }
        ConfigurationCommand::Delete { id, etag } => {
            let registry = cx.registry()?;
            registry
                .configurations()
                .delete_configuration(id, identity::if_match_or_any(etag))
                .await?;
            Ok(())
        }
    }
}
