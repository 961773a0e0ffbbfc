//! Finding devices on the local network: mDNS / DNS-SD (`_tessera._tcp`, the `mdns-sd` crate).
//!
//! A listening device advertises its name, status (`ready` / `busy`) and the first bytes of its
//! identity key. What mDNS says is only a hint of where to connect: who answers is established
//! by the channel's authentication, never by the advertisement.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use super::PeerError;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_tessera._tcp.local.";

fn mdns_err(e: mdns_sd::Error) -> PeerError {
    PeerError::Discovery(e.to_string())
}

/// A device found on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundDevice {
    /// Its advertised name.
    pub name: String,
    /// `ready` or `busy`.
    pub status: String,
    /// First 8 bytes of its identity key, hex, as advertised.
    pub fingerprint: String,
    /// Where it listens.
    pub addresses: Vec<SocketAddr>,
}

/// This device's advertisement; withdrawn when dropped.
pub struct Advertisement {
    daemon: ServiceDaemon,
    instance: String,
    host: String,
    fingerprint: String,
    port: u16,
    fullname: String,
}

impl Advertisement {
    /// Advertises `name` listening on `port`, status `ready`.
    ///
    /// # Errors
    /// [`PeerError::Discovery`] when mDNS cannot start (no multicast-capable interface...).
    pub fn start(name: &str, identity: &[u8; 32], port: u16) -> Result<Self, PeerError> {
        let daemon = ServiceDaemon::new().map_err(mdns_err)?;
        let fingerprint = hex::encode(&identity[..8]);
        let mut ad = Advertisement {
            daemon,
            instance: name.to_string(),
            host: format!("tessera-{fingerprint}.local."),
            fingerprint,
            port,
            fullname: String::new(),
        };
        ad.set_status("ready")?;
        Ok(ad)
    }

    /// Re-announces with `status` (`ready` or `busy`).
    ///
    /// # Errors
    /// [`PeerError::Discovery`].
    pub fn set_status(&mut self, status: &str) -> Result<(), PeerError> {
        let properties = [
            ("name", self.instance.as_str()),
            ("status", status),
            ("id", self.fingerprint.as_str()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &self.instance,
            &self.host,
            "",
            self.port,
            &properties[..],
        )
        .map_err(mdns_err)?
        .enable_addr_auto();
        self.fullname = info.get_fullname().to_string();
        self.daemon.register(info).map_err(mdns_err)
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Browses for `timeout` and returns the devices found, by name. Blocking.
///
/// # Errors
/// [`PeerError::Discovery`].
pub fn browse(timeout: Duration) -> Result<Vec<FoundDevice>, PeerError> {
    browse_until(timeout, |_| false)
}

/// Browses until a device named `name` is found (or `timeout`). Blocking.
///
/// # Errors
/// [`PeerError::Discovery`]; [`PeerError::NotFound`] when no such device answered.
pub fn find(name: &str, timeout: Duration) -> Result<FoundDevice, PeerError> {
    browse_until(timeout, |d| d.name == name)?
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| {
            PeerError::NotFound(format!(
                "no device named {name:?} answered on the local network within {}s \
                 (is `tessera peer listen` running there? without multicast, use --connect HOST:PORT)",
                timeout.as_secs()
            ))
        })
}

fn browse_until(
    timeout: Duration,
    done: impl Fn(&FoundDevice) -> bool,
) -> Result<Vec<FoundDevice>, PeerError> {
    let daemon = ServiceDaemon::new().map_err(mdns_err)?;
    let events = daemon.browse(SERVICE_TYPE).map_err(mdns_err)?;
    let deadline = Instant::now() + timeout;
    let mut found: BTreeMap<String, FoundDevice> = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = events.recv_timeout(left) else {
            break;
        };
        match event {
            ServiceEvent::ServiceResolved(info) => {
                let prop = |k: &str| {
                    info.txt_properties
                        .get_property_val_str(k)
                        .unwrap_or_default()
                        .to_string()
                };
                let name = prop("name");
                if super::wire::check_name(&name).is_err() {
                    continue;
                }
                // Announcements may come in parts: merge the addresses seen for a name.
                let mut addresses: Vec<SocketAddr> = found
                    .get(&name)
                    .map(|d| d.addresses.clone())
                    .unwrap_or_default();
                for a in info.get_addresses() {
                    let ip = a.to_ip_addr();
                    // Link-local IPv6 needs an interface scope to connect to: skipped.
                    let link_local =
                        matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
                    let address = SocketAddr::new(ip, info.get_port());
                    if !link_local && !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
                // IPv4 first, loopback last: the likeliest to work from here.
                addresses.sort_by_key(|a| (a.is_ipv6(), is_loopback(a.ip()), *a));
                let device = FoundDevice {
                    name: name.clone(),
                    status: prop("status"),
                    fingerprint: prop("id"),
                    addresses,
                };
                // Stop at a wanted device once it has an IPv4 address (or the time is up).
                let stop = done(&device) && device.addresses.iter().any(SocketAddr::is_ipv4);
                found.insert(name, device);
                if stop {
                    break;
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                found.retain(|n, _| !fullname.starts_with(n.as_str()));
            }
            _ => {}
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}
