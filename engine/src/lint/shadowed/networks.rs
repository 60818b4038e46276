//! Networks inside an earlier rule's (or entry's) network.

use ahash::AHashMap;
use ipnet::IpNet;

use super::{Cover, Style};
use crate::config::Cidr;
use crate::lint::Warning;

fn network_covers(outer: &Cidr, network: &Cidr) -> String {
    if outer == network {
        format!("same network {}", network.0)
    } else {
        format!("{} inside {}", network.0, outer.0)
    }
}

/// Every network that contains `net` (itself included): its prefixes.
fn enclosing(net: &Cidr) -> impl Iterator<Item = IpNet> + '_ {
    (0..=net.0.prefix_len()).filter_map(move |len| IpNet::new(net.0.network(), len).ok().map(|n| n.trunc()))
}

pub(super) fn ip_rules(out: &mut Vec<Warning>, path: &str, rules: &[&[Cidr]]) {
    let style = Style { rules: path, field: "cidrs", lead: "" };
    // Each network seen so far, with the first (rule, entry) that listed it: a
    // network is covered by whatever is found among its prefixes, so a lookup is
    // at most 33 (IPv4) or 129 (IPv6) probes, whatever the number of networks.
    let mut seen: AHashMap<IpNet, (usize, usize)> = AHashMap::new();
    for (j, cidrs) in rules.iter().enumerate() {
        let covers: Vec<Option<Cover>> = cidrs
            .iter()
            .enumerate()
            .map(|(k, net)| {
                let first = enclosing(net).filter_map(|prefix| seen.get(&prefix).copied()).min();
                seen.entry(net.0).or_insert((j, k));
                let (i, m) = first?;
                let detail = network_covers(&rules[i][m], net);
                Some(if i < j { Cover::Rule { index: i, detail } } else { Cover::Entry { index: m, detail } })
            })
            .collect();
        style.report(out, j, &covers, |_| String::new());
    }
}

#[cfg(test)]
mod tests {
    use crate::lint::shadowed::tests::{assert_clean, assert_lint, lint, IP};
    use crate::lint::shadowed::MAX_LISTED;

    #[test]
    fn network_inside_an_earlier_network() {
        assert_lint(
            "ip_rules:
  - {cidr: 10.0.0.0/8, target: new_cluster}
  - {cidr: 10.1.0.0/16, target: old_cluster}
  - {cidr: 10.0.0.0/8, target: old_cluster}",
            &[
                &format!("{IP}[1]: never matches: {IP}[0] already matches every request it would (10.1.0.0/16 inside 10.0.0.0/8)"),
                &format!("{IP}[2]: never matches: {IP}[0] already matches every request it would (same network 10.0.0.0/8)"),
            ],
        );
    }

    #[test]
    fn networks_that_overlap_without_being_inside_or_differ_in_family() {
        assert_clean(
            "ip_rules:
  - {cidr: 10.1.0.0/16, target: new_cluster}
  - {cidr: 10.0.0.0/8, target: old_cluster}
  - {cidr: 0.0.0.0/1, target: old_cluster}
  - {cidr: 2001:db8:1::/48, target: new_cluster}
  - {cidr: 2001:db8::/32, target: old_cluster}
  - {cidr: '::/0', target: old_cluster}
  - {cidr: 0.0.0.0/0, target: old_cluster}",
        );
        assert_clean(
            "ip_rules:
  - {cidr: 0.0.0.0/0, target: new_cluster}
  - {cidrs: ['::1', '2001:db8::/32', '::/0'], target: old_cluster}",
        );
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4() {
        assert_lint(
            "ip_rules:
  - {cidr: '::ffff:10.0.0.0/104', target: new_cluster}
  - {cidr: 10.9.0.0/16, target: old_cluster}",
            &[&format!("{IP}[1]: never matches: {IP}[0] already matches every request it would (10.9.0.0/16 inside 10.0.0.0/8)")],
        );
    }

    #[test]
    fn cidrs_list_whole_and_partial() {
        assert_lint(
            "ip_rules:
  - {cidrs: [10.0.0.0/8, 172.16.0.0/12], target: new_cluster}
  - {cidrs: [10.1.0.0/16, 172.16.5.0/24], target: old_cluster}
  - {cidr: 192.168.0.0/16, target: old_cluster}
  - {cidrs: [10.2.0.0/16, 192.168.1.0/24], target: old_cluster}
  - {cidrs: [1.0.0.0/8, 10.3.0.0/16, 1.2.0.0/16, 1.0.0.0/8, 2001:db8::/32], target: old_cluster}",
            &[
                &format!(
                    "{IP}[1]: never matches: {IP}[0] already matches every request it would \
                     (10.1.0.0/16 inside 10.0.0.0/8, 172.16.5.0/24 inside 172.16.0.0/12)"
                ),
                &format!(
                    "{IP}[3]: never matches: earlier rules already match every request it would \
                     ({IP}[0]: 10.2.0.0/16 inside 10.0.0.0/8; {IP}[2]: 192.168.1.0/24 inside 192.168.0.0/16)"
                ),
                &format!("{IP}[4].cidrs[1]: never matches: {IP}[0] already matches every request it would (10.3.0.0/16 inside 10.0.0.0/8)"),
                &format!("{IP}[4].cidrs[2]: redundant: {IP}[4].cidrs[0] already covers it (1.2.0.0/16 inside 1.0.0.0/8)"),
                &format!("{IP}[4].cidrs[3]: redundant: {IP}[4].cidrs[0] already covers it (same network 1.0.0.0/8)"),
            ],
        );
    }

    #[test]
    fn many_networks_find_the_first_listed_cover() {
        // 10.0.0.0/8 then 512 /24s inside it, then a /16 listed after them.
        let mut nets = vec!["10.0.0.0/8".to_owned()];
        nets.extend((0..512).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)));
        let found = lint(&format!(
            "ip_rules:\n  - {{cidr: 192.168.0.0/16, target: new}}\n  - {{cidrs: [{}], target: new}}\n  - {{cidr: 10.1.0.0/16, target: old}}",
            nets.join(", ")
        ));
        assert_eq!(found.len(), MAX_LISTED + 2, "{found:?}");
        assert_eq!(
            found[0],
            format!("{IP}[1].cidrs[1]: redundant: {IP}[1].cidrs[0] already covers it (10.0.0.0/24 inside 10.0.0.0/8)")
        );
        assert_eq!(
            found[MAX_LISTED + 1],
            format!("{IP}[2]: never matches: {IP}[1] already matches every request it would (10.1.0.0/16 inside 10.0.0.0/8)")
        );
    }
}
