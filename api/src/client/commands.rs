//! Remote commands: to a selector, a device's log upload, and reading the
//! logs back.

use super::{json, Client, Payload, NO_QUERY};
use crate::endpoints as ep;
use crate::types::{CommandsRequest, CommandsSent, LogsUploaded};
use crate::ClientError;

impl Client {
    /// One command for every device `req.selector` names in the token's scope.
    pub async fn send_commands(&self, req: &CommandsRequest) -> Result<CommandsSent, ClientError> {
        self.call(&ep::COMMANDS, &[], NO_QUERY, json(req)).await
    }

    /// A device sends `logs` for its upload-logs command `command`, with
    /// the command's one-use `token` (not an operator token).
    pub async fn upload_logs(
        &self,
        device: &str,
        command: &str,
        token: &str,
        logs: Vec<u8>,
    ) -> Result<LogsUploaded, ClientError> {
        let len = logs.len() as u64;
        self.clone()
            .with_token(Some(token.to_owned()))
            .call(
                &ep::UPLOAD_LOGS,
                &[device, command],
                NO_QUERY,
                Payload::Stream(reqwest::Body::from(logs), len),
            )
            .await
    }

    /// The logs `device` uploaded for command `command`, as it sent them.
    pub async fn device_logs(&self, device: &str, command: &str) -> Result<Vec<u8>, ClientError> {
        self.send(
            &ep::DEVICE_LOGS,
            &[device, command],
            NO_QUERY,
            Payload::Empty,
        )
        .await
    }
}
