//! Discovery through the system's resolver configuration: tierlb reads /etc/resolv.conf (a
//! private one, bind-mounted in a mount namespace of its own) and asks the DNS server on
//! 127.0.0.1:53 of a network namespace the test made, where the replicas live too.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::discovery::{ips, replicas};
use common::dns::DnsServer;
use common::{hold, names, Backend, ConfigFile, Netns, Tierlb};
use hickory_proto::rr::RecordType;

#[test]
fn a_name_is_looked_up_through_resolv_conf() {
    let Some(ns) = Netns::new("dns") else {
        return;
    };
    let dns: DnsServer = ns.serve(|ready| {
        Box::pin(async move {
            let server = DnsServer::start_at(([127, 0, 0, 1], 53).into()).await;
            let _ = ready.send(server);
            std::future::pending::<()>().await;
        })
    });
    let backends: Vec<Backend> = ns.serve(|ready| {
        Box::pin(async move {
            let _ = ready.send(replicas(38, 3).await);
            std::future::pending::<()>().await;
        })
    });
    let port = backends[0].addr.port();
    dns.set_addresses("web.test", &ips(&backends.iter().collect::<Vec<_>>()));

    let config = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\ndiscover = [{{ dns = \"web.test:{port}\" }}]\n"
    ));
    let (cmd, _resolv) = common::with_resolv_conf(ns.command("unshare"), config.path());
    let since = Instant::now();
    let tierlb = Tierlb::spawn(cmd);
    tierlb
        .wait_log("node found", 3)
        .expect("three nodes found through resolv.conf");
    assert!(dns.queries("web.test", RecordType::A, since) >= 1);

    let addr = tierlb.addr;
    let served = ns.run(move || Box::pin(async move { names(&hold(addr, 30).await) }));
    let mut split = BTreeMap::new();
    for name in served {
        *split.entry(name).or_insert(0) += 1;
    }
    let want: BTreeMap<String, usize> = [
        ("n1".to_owned(), 10),
        ("n2".to_owned(), 10),
        ("n3".to_owned(), 10),
    ]
    .into();
    assert_eq!(split, want);
}
