//! Where and how to connect: URL parsing, port override, TLS, timeouts, and the translation of
//! lapin errors into [`CoreError`]s whose text names the cause and the fix.

use std::time::Duration;

use lapin::protocol::AMQPErrorKind;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, ErrorKind};

use crate::error::{CoreError, Result};
use crate::tls;

/// Default bound on TCP connect + TLS + AMQP handshake (the URL's `connection_timeout`, in ms,
/// overrides it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything needed to open (and re-open) a connection.
#[derive(Debug, Clone)]
pub struct ConnectSpec {
    uri: AMQPUri,
    ca_pem: Option<String>,
    display: String,
    timeout: Duration,
}

impl ConnectSpec {
    /// `url` is `amqp://` or `amqps://` with a URL-encoded vhost; `port` overrides its port;
    /// `ca_file` is a PEM CA bundle trusted on top of the system's roots (amqps only).
    pub fn new(url: &str, port: Option<u16>, ca_file: Option<&str>) -> Result<Self> {
        let mut uri: AMQPUri = url.parse().map_err(|e: String| {
            CoreError::InvalidArgument(format!("invalid AMQP URL {}: {e}", redact(url)))
        })?;
        // amq-protocol-uri only keeps domain names and falls back to "localhost" for IP
        // addresses; take the host from the URL ourselves.
        let parsed = url::Url::parse(url).map_err(|e| {
            CoreError::InvalidArgument(format!("invalid AMQP URL {}: {e}", redact(url)))
        })?;
        if let Some(host) = parsed.host_str() {
            uri.authority.host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
        }
        if let Some(port) = port {
            uri.authority.port = port;
        }
        let timeout = uri
            .query
            .connection_timeout
            .map_or(CONNECT_TIMEOUT, Duration::from_millis);
        let ca_pem = match (ca_file, &uri.scheme) {
            (Some(path), AMQPScheme::AMQPS) => Some(tls::load_ca_file(path)?),
            _ => None,
        };
        let host = &uri.authority.host;
        let display = format!(
            "{}://{}@{}:{}/{}",
            uri.scheme,
            uri.authority.userinfo.username,
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            },
            uri.authority.port,
            url_path_escape(&uri.vhost),
        );
        Ok(ConnectSpec {
            uri,
            ca_pem,
            display,
            timeout,
        })
    }

    /// The broker address without the password, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// Connect, authenticate and open the vhost; must run on the runtime.
    pub async fn connect(&self, connection_name: &str) -> Result<Connection> {
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| CoreError::Internal(format!("no async runtime for lapin: {e}")))?;
        let props = ConnectionProperties::default()
            .with_connection_name(connection_name.into())
            .with_client_property("product".into(), "volley".into());
        let fut = Connection::connect_uri_with_config(
            self.uri.clone(),
            props,
            tls::tls_config(self.ca_pem.as_deref()),
            runtime,
        );
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(err)) => Err(self.connect_error(&err)),
            Err(_) => Err(CoreError::Connection(format!(
                "timed out after {:.0?} connecting to {}; is the broker reachable and is this \
                 its AMQP{} port?",
                self.timeout,
                self.display,
                if self.is_tls() { "S" } else { "" }
            ))),
        }
    }

    fn connect_error(&self, err: &lapin::Error) -> CoreError {
        let target = &self.display;
        match err.kind() {
            ErrorKind::ProtocolError(amqp) => {
                let code = amqp.get_id();
                let text = amqp.get_message().as_str();
                if code == 403 || code == 530 {
                    CoreError::LoginRefused(format!(
                        "the broker at {target} refused the login ({code}: {text}); check the \
                         user name and password in the URL and that user's permissions on vhost \
                         {:?}",
                        self.uri.vhost
                    ))
                } else {
                    CoreError::Connection(format!(
                        "the broker at {target} closed the connection during the handshake \
                         ({code}: {text})"
                    ))
                }
            }
            ErrorKind::IOError(io) => {
                let msg = io.to_string();
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    CoreError::Connection(format!(
                        "could not connect to {target}: connection refused; is the broker \
                         running, and are the host and port right?"
                    ))
                } else if self.is_tls()
                    && (io.kind() == std::io::ErrorKind::InvalidData
                        || msg.contains("certificate")
                        || msg.contains("TLS")
                        || msg.contains("tls"))
                {
                    CoreError::Connection(format!(
                        "TLS handshake with {target} failed: {msg}; if the broker's certificate \
                         is signed by a private CA pass ca_file= with that CA's PEM bundle, and \
                         make sure the certificate names the host in the URL"
                    ))
                } else {
                    CoreError::Connection(format!("could not connect to {target}: {msg}"))
                }
            }
            ErrorKind::ParsingError(_) => self.not_amqp(err),
            _ if err.to_string().contains("parse") => self.not_amqp(err),
            _ => CoreError::Connection(format!("could not connect to {target}: {err}")),
        }
    }

    fn not_amqp(&self, err: &lapin::Error) -> CoreError {
        let hint = if self.is_tls() {
            "is this the broker's AMQPS port?"
        } else {
            "is this a TLS (AMQPS) port? then use an amqps:// URL"
        };
        CoreError::Connection(format!(
            "could not connect to {}: the server does not speak AMQP 0-9-1 here ({err}); {hint}",
            self.display
        ))
    }
}

/// Map an error from a channel operation (`what` names it, e.g. "basic.consume on queue 'x'").
pub fn op_error(err: &lapin::Error, what: &str, target: &str) -> CoreError {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let code = amqp.get_id();
            let text = amqp.get_message().as_str();
            match amqp.kind() {
                AMQPErrorKind::Soft(_) => CoreError::ChannelClosed {
                    code,
                    message: format!(
                        "{what} failed: the broker closed the channel ({code}: {text})"
                    ),
                },
                AMQPErrorKind::Hard(_) => CoreError::Connection(format!(
                    "{what} failed: the broker at {target} closed the connection ({code}: {text})"
                )),
            }
        }
        ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidConnectionState(..) => {
            CoreError::Connection(format!(
                "{what} failed: the connection to {target} was lost or closed"
            ))
        }
        _ => CoreError::Connection(format!("{what} failed: connection to {target} lost: {err}")),
    }
}

/// The URL with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            format!("{:?}", u.as_str())
        }
        _ => format!("{url:?}"),
    }
}

fn url_path_escape(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_vhosts() {
        let s = ConnectSpec::new("amqp://u:secret@127.0.0.1:5673/%2F", None, None).unwrap();
        assert_eq!(s.uri.authority.host, "127.0.0.1");
        assert_eq!(s.uri.authority.port, 5673);
        assert_eq!(s.uri.vhost, "/");
        assert_eq!(s.display(), "amqp://u@127.0.0.1:5673/%2F");
        assert!(!s.display().contains("secret"));

        let s = ConnectSpec::new("amqps://u:p@localhost/vh", Some(5999), None).unwrap();
        assert_eq!(s.uri.authority.port, 5999);
        assert!(s.is_tls());
        assert_eq!(s.uri.vhost, "vh");

        let s = ConnectSpec::new("amqp://[::1]:5672/%2F", None, None).unwrap();
        assert_eq!(s.uri.authority.host, "::1");
        assert_eq!(s.display(), "amqp://guest@[::1]:5672/%2F");
    }

    #[test]
    fn bad_urls_are_invalid_arguments_without_passwords() {
        let err = ConnectSpec::new("http://u:pw@host/", None, None).unwrap_err();
        match err {
            CoreError::InvalidArgument(m) => {
                assert!(m.contains("Invalid AMQP scheme"), "{m}");
                assert!(!m.contains("pw@"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ca_file_is_read_only_for_amqps() {
        assert!(ConnectSpec::new("amqp://h/", None, Some("/nonexistent")).is_ok());
        assert!(matches!(
            ConnectSpec::new("amqps://h/", None, Some("/nonexistent")),
            Err(CoreError::Connection(_))
        ));
    }

    #[test]
    fn refused_connection_names_the_fix() {
        // Port 1 on loopback: nothing listens there.
        let spec = ConnectSpec::new("amqp://127.0.0.1:1/%2F", None, None).unwrap();
        let handle = crate::runtime::handle().unwrap();
        let err = handle
            .block_on(async { spec.connect("test").await })
            .unwrap_err();
        match err {
            CoreError::Connection(m) => assert!(m.contains("connection refused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
