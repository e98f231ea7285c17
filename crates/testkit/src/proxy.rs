//! A TCP proxy a test can cut and restore.

/// A TCP proxy in front of a real service, which a test can cut and restore to make the service
/// "go away" for one client without disturbing other tests.
pub struct TcpProxy {
    pub address: std::net::SocketAddr,
    enabled: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (enabled, _) = tokio::sync::watch::channel(true);
        let enabled = std::sync::Arc::new(enabled);
        let (target, switch) = (target.to_owned(), enabled.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut on = switch.subscribe();
                if !*on.borrow() {
                    continue; // dropped: the connection is refused in effect
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = on.wait_for(|enabled| !enabled) => {}
                    }
                });
            }
        });
        TcpProxy { address, enabled }
    }

    /// Cuts every connection and refuses new ones (`false`), or lets them through again.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.send_replace(enabled);
    }
}
