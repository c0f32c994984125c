#![doc = include_str!("../README.md")]

mod cbs;
mod client;
mod connection;
mod error;
mod feedback;
mod file_notification;
mod inbox;
mod keepalive;
mod link;
mod message;
mod proxy;
mod time;
mod tls;
mod ws;

pub use client::{DEFAULT_KEEP_ALIVE, DEFAULT_SEND_TIMEOUT, ServiceClient, ServiceClientBuilder};
pub use connection::{AMQPS_PORT, HTTPS_PORT, Transport};
pub use error::{
    CONDITION_MESSAGE_SIZE_EXCEEDED, CONDITION_NOT_FOUND, CONDITION_RESOURCE_LIMIT_EXCEEDED,
    CONDITION_THROTTLED, CONDITION_UNAUTHORIZED, Error, Rejection, Result,
};
pub use feedback::{FeedbackBatch, FeedbackReceiver, FeedbackRecord, FeedbackStatus};
pub use file_notification::{FileNotification, FileNotificationMessage, FileNotificationReceiver};
pub use message::{ACK_PROPERTY, Ack, MAX_BODY_SIZE, Message, MessageBuilder};
