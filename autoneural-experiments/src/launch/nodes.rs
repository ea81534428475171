//! Data-parallel training across machines, Burn's way: one process trains (rank 0: data,
//! the model, the optimizer, checkpoints, evaluation), and every other rank serves its
//! machine's devices through Burn's remote backend (WebSocket), which rank 0 then lists
//! beside its own as data-parallel devices (`train::parallel`: a replica per device, a shard
//! each, gradients summed on rank 0's main device in device order). So every guarantee of
//! one machine holds: the same records per step, the same summation order, exact resume
//! (only rank 0 has state), and the result does not depend on which rank answers first.
//!
//! Every rank runs the same command (`srun autoneural run EXP.toml`, or by hand with the
//! variables below); rank and world size come from the environment:
//!
//! | variable | Slurm (`srun`) | by hand |
//! |---|---|---|
//! | rank | `SLURM_PROCID` | `AUTONEURAL_RANK` |
//! | world size | `SLURM_NTASKS` | `AUTONEURAL_WORLD_SIZE` |
//! | host of each rank | `SLURM_JOB_NODELIST` (`scontrol show hostnames`), one task per node | `AUTONEURAL_HOSTS=hostA,hostB,...` |
//! | ports | `AUTONEURAL_PORT` (default 29600): rank r serves on `port + 2r`, and keeps a control connection on `port + 2r + 1` | same |
//!
//! The AUTONEURAL_ variables win over Slurm's. A server rank hosts the devices of the
//! experiment's `device` (or `--device`) on its own machine and exits when rank 0's control
//! connection closes (rank 0 finished, failed or was killed), so an `srun` step ends with its
//! trainer. Rank 0 waits for each server (up to `AUTONEURAL_CONNECT_TIMEOUT` seconds,
//! default 300) before training.
//!
//! Every operation of a remote replica crosses the network (Burn's remote backend sends
//! operations, not gradients), and the model is sent to it every step (`fork`): this pays on
//! GPUs with models whose steps dwarf the transfers, on a fast network.

#[cfg(feature = "remote")]
use std::io::Read;
#[cfg(feature = "remote")]
use std::net::{TcpListener, TcpStream};
#[cfg(feature = "remote")]
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

/// This process's place in a multi-machine run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub rank: usize,
    pub world: usize,
    /// The host of every rank (rank 0's too), as the other ranks reach it.
    pub hosts: Vec<String>,
    /// Rank r serves on `port + 2r`, its control socket on `port + 2r + 1`.
    pub port: u16,
}

pub const DEFAULT_PORT: u16 = 29600;

impl Node {
    /// The run's ranks from the environment; `None` for a run on one machine (no variables,
    /// or a world of one).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok(), expand_slurm_hosts)
    }

    /// [`Node::from_env`] over `var`, with `expand` turning a Slurm node list into hosts.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        expand: impl Fn(&str) -> Result<Vec<String>>,
    ) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| v.trim().parse::<usize>().with_context(|| format!("{name}={v:?}: expected a whole number")))
                .transpose()
        };
        let own = number("AUTONEURAL_WORLD_SIZE")?.is_some();
        let (rank, world) = if own {
            (number("AUTONEURAL_RANK")?.unwrap_or(0), number("AUTONEURAL_WORLD_SIZE")?.unwrap_or(1))
        } else {
            (number("SLURM_PROCID")?.unwrap_or(0), number("SLURM_NTASKS")?.unwrap_or(1))
        };
        if world <= 1 {
            return Ok(None);
        }
        if rank >= world {
            bail!("rank {rank} is not below the world size {world}");
        }
        let hosts: Vec<String> = match var("AUTONEURAL_HOSTS") {
            Some(list) => list.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect(),
            None if !own => {
                let list = var("SLURM_JOB_NODELIST").context(
                    "SLURM_NTASKS > 1 but SLURM_JOB_NODELIST is not set: run under srun, or set AUTONEURAL_HOSTS",
                )?;
                expand(&list)?
            }
            None => {
                bail!("AUTONEURAL_WORLD_SIZE={world} needs AUTONEURAL_HOSTS: the host of each rank, comma-separated")
            }
        };
        if hosts.len() != world {
            bail!(
                "{} host(s) ({}) for a world of {world}: give one host per rank (under Slurm, one task per node: \
                 srun --ntasks-per-node=1)",
                hosts.len(),
                hosts.join(",")
            );
        }
        let port = match var("AUTONEURAL_PORT") {
            Some(p) => p.trim().parse::<u16>().with_context(|| format!("AUTONEURAL_PORT={p:?}: expected a port"))?,
            None => DEFAULT_PORT,
        };
        if usize::from(port) + 2 * world > usize::from(u16::MAX) {
            bail!("AUTONEURAL_PORT={port} leaves no room for {world} ranks' ports");
        }
        Ok(Some(Self { rank, world, hosts, port }))
    }

    /// Rank `r`'s WebSocket port.
    pub fn serve_port(&self, r: usize) -> u16 {
        self.port + 2 * r as u16
    }

    #[cfg(feature = "remote")]
    fn control_port(&self, r: usize) -> u16 {
        self.serve_port(r) + 1
    }
}

/// A Slurm node list (`node[01-03],gpu7`) as hosts, by `scontrol show hostnames`.
fn expand_slurm_hosts(list: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("scontrol")
        .args(["show", "hostnames", list])
        .output()
        .context("running scontrol to expand SLURM_JOB_NODELIST (or set AUTONEURAL_HOSTS)")?;
    if !out.status.success() {
        bail!("scontrol show hostnames {list}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// A server rank: hosts `devices` (this machine's) until rank 0's control connection closes.
#[cfg(feature = "remote")]
pub fn serve(node: &Node, devices: Vec<Device>) -> Result<()> {
    use burn::tensor::server::{RemoteServer, WebSocketTransport};
    let port = node.serve_port(node.rank);
    // The control socket first: rank 0 connects to it once the devices are served, and its
    // closing ends this process.
    let control = TcpListener::bind(("0.0.0.0", node.control_port(node.rank)))
        .with_context(|| format!("rank {}: cannot listen on port {}", node.rank, node.control_port(node.rank)))?;
    // Bound here, so that a port in use is this command's error, not the server thread's.
    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("rank {}: cannot listen on port {port}", node.rank))?;
    let names: Vec<String> = devices.iter().map(|d| format!("{d:?}")).collect();
    eprintln!(
        "rank {} of {}: serving {} device(s) ({}) on port {port} for rank 0 ({})",
        node.rank,
        node.world,
        devices.len(),
        names.join(", "),
        node.hosts[0]
    );
    let server = RemoteServer::new(devices);
    std::thread::Builder::new()
        .name("remote-server".into())
        .spawn(move || {
            // It returns on SIGTERM or Ctrl+C (Slurm ending the step), or on a failure: either
            // way this rank is done.
            match server.serve(WebSocketTransport::from_listener(listener)) {
                Ok(()) => {
                    eprintln!("rank server on port {port} stopped by a signal");
                    std::process::exit(0);
                }
                Err(e) => {
                    eprintln!("rank server on port {port} failed: {e}");
                    std::process::exit(1);
                }
            }
        })
        .context("starting the server thread")?;
    let (mut stream, peer) = control.accept().context("waiting for rank 0")?;
    eprintln!("rank {}: rank 0 connected from {peer}", node.rank);
    // Rank 0 never writes: the read returns when it closes the connection, however it ends.
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte);
    eprintln!("rank {}: rank 0 has finished; stopping", node.rank);
    Ok(())
}

#[cfg(not(feature = "remote"))]
pub fn serve(_node: &Node, _devices: Vec<Device>) -> Result<()> {
    bail!("this build has no remote backend for multi-machine training: rebuild with `--features remote`")
}

/// Rank 0's control connections to the servers: open until this process ends, however it
/// ends, which is what stops the servers.
#[cfg(feature = "remote")]
static CONTROLS: std::sync::Mutex<Vec<TcpStream>> = std::sync::Mutex::new(Vec::new());

/// Rank 0: every server rank's devices, connected, in rank order.
#[cfg(feature = "remote")]
pub fn remote_devices(node: &Node) -> Result<Vec<Device>> {
    use burn::tensor::remote::RemoteHost;
    let timeout = std::env::var("AUTONEURAL_CONNECT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let mut devices = Vec::new();
    for r in 1..node.world {
        let host = &node.hosts[r];
        let t0 = Instant::now();
        // A server may start after rank 0: retry until it listens.
        let control = loop {
            match TcpStream::connect((host.as_str(), node.control_port(r))) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => bail!(
                    "rank {r} at {host}:{} did not answer within {} s: {e} (is `autoneural run` running there \
                     with rank {r}?)",
                    node.control_port(r),
                    timeout.as_secs()
                ),
            }
        };
        let url = format!("ws://{host}:{}", node.serve_port(r));
        let remote = RemoteHost::websocket(&url);
        let hosted = loop {
            match remote.devices() {
                Ok(d) => break d,
                Err(_) if t0.elapsed() < timeout => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => bail!("rank {r}'s devices at {url}: {e}"),
            }
        };
        eprintln!("rank 0: {} device(s) of rank {r} at {url}", hosted.len());
        devices.extend(hosted);
        CONTROLS.lock().expect("control connections").push(control);
    }
    Ok(devices)
}

#[cfg(not(feature = "remote"))]
pub fn remote_devices(_node: &Node) -> Result<Vec<Device>> {
    bail!("this build has no remote backend for multi-machine training: rebuild with `--features remote`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(vars: &[(&str, &str)]) -> Result<Option<Node>> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Node::from_vars(
            |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            |list| Ok(list.split(',').map(String::from).collect()),
        )
    }

    #[test]
    fn ranks_come_from_our_variables_or_slurms() {
        assert_eq!(node(&[]).unwrap(), None);
        assert_eq!(node(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(), None);
        let n = node(&[("SLURM_NTASKS", "2"), ("SLURM_PROCID", "1"), ("SLURM_JOB_NODELIST", "a,b")]).unwrap().unwrap();
        assert_eq!((n.rank, n.world, n.hosts.clone(), n.port), (1, 2, vec!["a".into(), "b".into()], DEFAULT_PORT));
        assert_eq!(n.serve_port(1), DEFAULT_PORT + 2);
        // Ours win over Slurm's (a run by hand inside an allocation).
        let n = node(&[
            ("SLURM_NTASKS", "4"),
            ("AUTONEURAL_WORLD_SIZE", "2"),
            ("AUTONEURAL_RANK", "0"),
            ("AUTONEURAL_HOSTS", "127.0.0.1,127.0.0.1"),
            ("AUTONEURAL_PORT", "4000"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((n.rank, n.world, n.port), (0, 2, 4000));
    }

    #[test]
    fn bad_variables_are_refused_with_their_name() {
        let e = node(&[("AUTONEURAL_WORLD_SIZE", "two")]).unwrap_err().to_string();
        assert!(e.contains("AUTONEURAL_WORLD_SIZE"), "{e}");
        let e = node(&[("AUTONEURAL_WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("AUTONEURAL_HOSTS"), "{e}");
        let e = node(&[("AUTONEURAL_WORLD_SIZE", "2"), ("AUTONEURAL_RANK", "2"), ("AUTONEURAL_HOSTS", "a,b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 2"), "{e}");
        let e = node(&[("AUTONEURAL_WORLD_SIZE", "3"), ("AUTONEURAL_HOSTS", "a,b")]).unwrap_err().to_string();
        assert!(e.contains("one host per rank"), "{e}");
    }
}
