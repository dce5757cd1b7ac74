//! The channels that leave the process — email, push, SMS — each a
//! `tower::Service<Arc<Outgoing>>` wrapped in its own resilience stack
//! (metrics → breaker → concurrency → timeout → retry, from
//! `[services.smtp]`, `[services.push]`, `[services.sms]`).
//!
//! - email: SMTP through `lettre` (`email.smtp_url`), an HTML and a text
//!   body, the delivery id as `Message-ID`, an open pixel and tracked links;
//! - push and SMS: an HTTP gateway (`notifications.<channel>.url`), a JSON
//!   body, the delivery id in the `Idempotency-Key` and `X-Delivery-Id`
//!   headers, an optional auth header;
//! - without a provider, a file transport: one file per message in
//!   `notifications.outbox/<channel>/`, named after the delivery id (so a
//!   resend rewrites the same file).
//!
//! In-app deliveries are stored rows and need no service (see
//! [`super::worker`]).

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{PoolConfig, authentication::Credentials},
};
use resilience::{BoxError, registry::Registry, stack::ServiceStack};
use serde_json::{Value, json};
use tower::{Service, util::BoxCloneService};
use uuid::Uuid;

use super::{
    config::{EmailSettings, GatewaySettings},
    model::{Channel, Priority},
};
use crate::config::Settings;

/// The names of the channel stacks (`[services.<name>]`).
pub const STACKS: &[&str] = &["smtp", "push", "sms"];

/// One message to hand to a provider.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The stable delivery id the provider sees.
    pub delivery_id: Uuid,
    /// The notification.
    pub notification_id: Uuid,
    /// The recipient.
    pub user_id: Uuid,
    /// Their email address.
    pub email: Option<String>,
    /// The type.
    pub kind: String,
    /// Subject.
    pub title: String,
    /// Body text.
    pub message: String,
    /// Priority.
    pub priority: Priority,
    /// The send's data.
    pub data: Option<Value>,
    /// Secret of the pixel and links.
    pub tracking_token: String,
}

/// A provider's refusal or failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ChannelError {
    /// Retrying will not help (a 5xx SMTP reply, a 4xx from a gateway).
    pub permanent: bool,
    /// What happened (no secrets).
    pub message: String,
}

impl ChannelError {
    fn transient(message: impl Into<String>) -> Self {
        Self {
            permanent: false,
            message: message.into(),
        }
    }
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            message: message.into(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A channel's service with its stack.
pub type ChannelService = BoxCloneService<Arc<Outgoing>, (), BoxError>;

/// The three outgoing channels, built once (their stacks are registered).
#[derive(Clone)]
pub struct Channels {
    email: Arc<Mutex<ChannelService>>,
    push: Arc<Mutex<ChannelService>>,
    sms: Arc<Mutex<ChannelService>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

impl Channels {
    /// Builds every channel from `settings`, registering the stacks `smtp`,
    /// `push` and `sms` in `registry`.
    pub fn new(settings: &Settings, registry: &Registry) -> anyhow::Result<Self> {
        let outbox = settings.notifications.outbox.clone();
        // Keep as many SMTP connections open as this process can have
        // emails in flight: lettre closes a connection returned to a full
        // pool, so a pool smaller than the concurrency reconnects (TCP,
        // greeting, EHLO) for most messages.
        let in_flight = settings.notifications.workers.max(1) * settings.notifications.concurrency;
        let email = Email::new(
            &settings.email,
            &settings.notifications.public_url,
            &outbox,
            u32::try_from(in_flight).unwrap_or(u32::MAX),
        )?;
        let push = Gateway::new(Channel::Push, &settings.notifications.push, &outbox)?;
        let sms = Gateway::new(Channel::Sms, &settings.notifications.sms, &outbox)?;
        let stack = |name: &str| ServiceStack::new(name, &settings.service(name), registry);
        Ok(Self {
            email: Arc::new(Mutex::new(BoxCloneService::new(tower::Layer::layer(
                &stack("smtp")?,
                email,
            )))),
            push: Arc::new(Mutex::new(BoxCloneService::new(tower::Layer::layer(
                &stack("push")?,
                push,
            )))),
            sms: Arc::new(Mutex::new(BoxCloneService::new(tower::Layer::layer(
                &stack("sms")?,
                sms,
            )))),
        })
    }

    /// A handle on the service of `channel` (`None` for in-app).
    pub fn service(&self, channel: Channel) -> Option<ChannelService> {
        let cell = match channel {
            Channel::Email => &self.email,
            Channel::Push => &self.push,
            Channel::Sms => &self.sms,
            Channel::InApp => return None,
        };
        cell.lock().ok().map(|service| service.clone())
    }

    /// The stack name of `channel`.
    pub fn stack_name(channel: Channel) -> &'static str {
        match channel {
            Channel::Email => "smtp",
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::InApp => "in_app",
        }
    }
}

/// The `http(s)://` links of a message, in order, as byte ranges.
pub fn links(message: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut offset = 0;
    for word in message.split_inclusive(char::is_whitespace) {
        let trimmed = word.trim_end();
        let candidate = trimmed.trim_start_matches(['(', '"', '\'', '<']);
        let lead = trimmed.len() - candidate.len();
        if candidate.starts_with("http://") || candidate.starts_with("https://") {
            let link =
                candidate.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', '"', '\'', '>']);
            if link.len() > "https://".len() {
                found.push((offset + lead, offset + lead + link.len()));
            }
        }
        offset += word.len();
    }
    found
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>\n"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML body: the message escaped, links through `/t/c/{token}.{n}`,
/// and the open pixel `/t/o/{token}`.
pub fn html_body(out: &Outgoing, public_url: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let mut body = String::new();
    let mut last = 0;
    for (n, (start, end)) in links(&out.message).into_iter().enumerate() {
        body.push_str(&escape(&out.message[last..start]));
        let url = &out.message[start..end];
        body.push_str(&format!(
            "<a href=\"{base}/t/c/{}.{n}\">{}</a>",
            out.tracking_token,
            escape(url)
        ));
        last = end;
    }
    body.push_str(&escape(&out.message[last..]));
    format!(
        "<!DOCTYPE html>\n<html><body>\n<h1>{}</h1>\n<p>{}</p>\n<img src=\"{base}/t/o/{}\" width=\"1\" height=\"1\" alt=\"\">\n</body></html>\n",
        escape(&out.title),
        body,
        out.tracking_token
    )
}

/// The email channel: SMTP, or the file transport.
#[derive(Clone)]
struct Email {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    outbox: PathBuf,
    from: Mailbox,
    public_url: Arc<str>,
}

impl Email {
    fn new(
        settings: &EmailSettings,
        public_url: &str,
        outbox: &std::path::Path,
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let transport = if settings.smtp_url.is_empty() {
            None
        } else {
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&settings.smtp_url)
                .map_err(|e| anyhow::anyhow!("email.smtp_url: {e}"))?
                .timeout(Some(settings.timeout))
                .pool_config(PoolConfig::new().max_size(pool_size.max(1)));
            if !settings.username.is_empty() {
                builder = builder.credentials(Credentials::new(
                    settings.username.clone(),
                    settings.password.clone(),
                ));
            }
            Some(builder.build())
        };
        Ok(Self {
            transport,
            outbox: outbox.join("email"),
            from: settings
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("email.from: {e}"))?,
            public_url: public_url.into(),
        })
    }

    fn message(&self, out: &Outgoing) -> Result<Message, ChannelError> {
        let to: Mailbox = out
            .email
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| ChannelError::permanent("the recipient's email address is invalid"))?;
        Message::builder()
            .message_id(Some(format!("<{}@boardroom>", out.delivery_id)))
            .from(self.from.clone())
            .to(to)
            .subject(out.title.clone())
            .multipart(MultiPart::alternative_plain_html(
                format!("{}\n\n{}\n", out.title, out.message),
                html_body(out, &self.public_url),
            ))
            .map_err(|e| ChannelError::permanent(format!("cannot build the email: {e}")))
    }
}

impl Service<Arc<Outgoing>> for Email {
    type Response = ();
    type Error = ChannelError;
    type Future = BoxFuture<Result<(), ChannelError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, out: Arc<Outgoing>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let message = this.message(&out)?;
            match &this.transport {
                Some(smtp) => match smtp.send(message).await {
                    Ok(_) => Ok(()),
                    Err(error) if error.is_permanent() => {
                        Err(ChannelError::permanent(format!("SMTP refused: {error}")))
                    }
                    Err(error) => Err(ChannelError::transient(format!("SMTP: {error}"))),
                },
                None => {
                    let path = this.outbox.join(format!("{}.eml", out.delivery_id));
                    write_file(&this.outbox, path, message.formatted()).await
                }
            }
        })
    }
}

async fn write_file(
    folder: &std::path::Path,
    path: PathBuf,
    bytes: Vec<u8>,
) -> Result<(), ChannelError> {
    tokio::fs::create_dir_all(folder)
        .await
        .map_err(|e| ChannelError::transient(format!("outbox {}: {e}", folder.display())))?;
    // Written aside and renamed: a reader never sees half a message.
    let partial = path.with_extension("partial");
    tokio::fs::write(&partial, bytes)
        .await
        .map_err(|e| ChannelError::transient(format!("outbox: {e}")))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| ChannelError::transient(format!("outbox: {e}")))
}

/// A push or SMS gateway, or its file transport.
#[derive(Clone)]
struct Gateway {
    channel: Channel,
    client: reqwest::Client,
    url: Option<reqwest::Url>,
    auth: Option<(http::HeaderName, http::HeaderValue)>,
    outbox: PathBuf,
}

impl Gateway {
    fn new(
        channel: Channel,
        settings: &GatewaySettings,
        outbox: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let url = if settings.url.is_empty() {
            None
        } else {
            Some(reqwest::Url::parse(&settings.url)?)
        };
        let auth = match settings.auth_header.split_once(':') {
            Some((name, value)) => Some((
                http::HeaderName::try_from(name.trim())?,
                http::HeaderValue::try_from(value.trim())?,
            )),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(
                settings
                    .timeout
                    .unwrap_or(std::time::Duration::from_secs(5)),
            )
            .build()?;
        Ok(Self {
            channel,
            client,
            url,
            auth,
            outbox: outbox.join(channel.as_str()),
        })
    }
}

/// The JSON a gateway receives.
pub fn gateway_body(channel: Channel, out: &Outgoing) -> Value {
    json!({
        "deliveryId": out.delivery_id,
        "notificationId": out.notification_id,
        "channel": channel.as_str(),
        "userId": out.user_id,
        "email": out.email,
        "type": out.kind,
        "title": out.title,
        "message": out.message,
        "priority": out.priority,
        "data": out.data,
    })
}

impl Service<Arc<Outgoing>> for Gateway {
    type Response = ();
    type Error = ChannelError;
    type Future = BoxFuture<Result<(), ChannelError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, out: Arc<Outgoing>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let body = gateway_body(this.channel, &out);
            let Some(url) = this.url.clone() else {
                let path = this.outbox.join(format!("{}.json", out.delivery_id));
                let bytes = serde_json::to_vec_pretty(&body)
                    .map_err(|e| ChannelError::permanent(e.to_string()))?;
                return write_file(&this.outbox, path, bytes).await;
            };
            let id = out.delivery_id.to_string();
            let mut request = this
                .client
                .post(url)
                .header("Idempotency-Key", &id)
                .header("X-Delivery-Id", &id)
                .json(&body);
            if let Some((name, value)) = &this.auth {
                request = request.header(name.clone(), value.clone());
            }
            let name = this.channel.as_str();
            match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let retryable = status.is_server_error()
                        || status == http::StatusCode::TOO_MANY_REQUESTS
                        || status == http::StatusCode::REQUEST_TIMEOUT;
                    let message = format!("{name} gateway answered {status}");
                    Err(if retryable {
                        ChannelError::transient(message)
                    } else {
                        ChannelError::permanent(message)
                    })
                }
                Err(error) if error.is_timeout() => {
                    Err(ChannelError::transient(format!("{name} gateway timed out")))
                }
                Err(_) => Err(ChannelError::transient(format!(
                    "{name} gateway unreachable"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn links_are_found_and_trailing_punctuation_is_left_out() {
        let text = "Agenda: https://example.org/a?b=1. Minutes (http://x.test/m), done";
        let found: Vec<&str> = links(text).iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(found, ["https://example.org/a?b=1", "http://x.test/m"]);
    }

    #[test]
    fn html_escapes_and_tracks() {
        let out = Outgoing {
            delivery_id: Uuid::nil(),
            notification_id: Uuid::nil(),
            user_id: Uuid::nil(),
            email: None,
            kind: "t".into(),
            title: "<Board>".into(),
            message: "See https://example.org/x & <b>".into(),
            priority: Priority::Normal,
            data: None,
            tracking_token: "tok".into(),
        };
        let html = html_body(&out, "http://h:1/");
        assert!(html.contains("&lt;Board&gt;"));
        assert!(html.contains("<a href=\"http://h:1/t/c/tok.0\">https://example.org/x</a>"));
        assert!(html.contains("&amp; &lt;b&gt;"));
        assert!(html.contains("src=\"http://h:1/t/o/tok\""));
    }
}
