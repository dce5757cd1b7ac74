//! A private clamd for the asset tests: its own temporary folder, config and
//! signature database (one `.ndb` entry matching the EICAR test string, so it
//! starts in well under a second and never downloads anything), listening
//! on a free TCP port on 127.0.0.1. Stopped (killed) when dropped.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The EICAR anti-virus test file (harmless; every scanner flags it).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A running (or stopped) private clamd.
pub struct Clamd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Clamd {
    /// Writes the config and signatures and starts clamd; waits for `PING`.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("boardroom-clamd-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let hex: String = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(dir.join("db/test.ndb"), format!("Test.Eicar:0:*:{hex}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {db}\n\
             TemporaryDirectory {tmp}\nPidFile {dir}/clamd.pid\nLogFile {dir}/clamd.log\n\
             StreamMaxLength 300M\nMaxThreads 4\n",
            db = dir.join("db").display(),
            tmp = dir.join("tmp").display(),
            dir = dir.display(),
        );
        std::fs::write(dir.join("clamd.conf"), config).unwrap();
        let mut clamd = Self {
            dir,
            port,
            child: None,
        };
        clamd.restart();
        clamd
    }

    /// `tcp://127.0.0.1:<port>`, for `scanner.clamd_url`.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Kills clamd (as a crash would); the port stays reserved for [`Clamd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts clamd again on the same port and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let binary = ["/usr/sbin/clamd", "/usr/bin/clamd"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("clamd is installed (apt-get install clamav-daemon; scripts/test does it)");
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.join("clamd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd starts");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("clamd.log")).unwrap_or_default();
        panic!("clamd did not answer PING within 30 s; its log:\n{log}");
    }

    fn ping(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
        if socket.write_all(b"zPING\0").is_err() {
            return false;
        }
        let mut reply = [0u8; 16];
        matches!(socket.read(&mut reply), Ok(n) if reply[..n].starts_with(b"PONG"))
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
