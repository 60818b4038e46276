//! Client-network tables: "which is the first listed network that contains this
//! address?" answered by one binary search, whatever the number of networks.
//!
//! CIDR blocks form a laminar family (two blocks are either disjoint or nested), so
//! the address space splits into at most `2n + 1` ranges, each with a fixed answer:
//! the lowest rule index among the blocks covering it. The table keeps the range
//! starts sorted; a lookup is `partition_point` over them (docs/decision.md,
//! step 5; `from:` of step 3).

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether `net` contains `address`, an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) being the IPv4 address it carries, as [`CidrTable::lookup`]
/// reads it.
pub fn network_contains(net: &IpNet, address: IpAddr) -> bool {
    let address = match address {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(address, IpAddr::V4),
        a => a,
    };
    net.contains(&address)
}

/// Answer stored for "no listed network contains the address".
const NONE: u32 = u32::MAX;

#[derive(Clone, Debug, Default)]
struct RangeTable<A> {
    starts: Vec<A>,
    answers: Vec<u32>,
}

trait Address: Copy + Ord + std::fmt::Debug {
    const ZERO: Self;
    fn successor(self) -> Option<Self>;
}

impl Address for u32 {
    const ZERO: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Address for u128 {
    const ZERO: Self = 0;
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl<A: Address> RangeTable<A> {
    /// `blocks`: (first address, last address, answer). Smaller answers win where
    /// blocks overlap.
    fn build(mut blocks: Vec<(A, A, u32)>) -> Self {
        // Outer blocks before the blocks they contain; among equal blocks, the
        // winning answer first.
        blocks.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut table = RangeTable { starts: vec![A::ZERO], answers: vec![NONE] };
        // Each entry: (last address of an open block, answer inside it).
        let mut open: Vec<(A, u32)> = Vec::new();
        for (first, last, answer) in blocks {
            close_before(&mut table, &mut open, Some(first));
            let inherited = open.last().map_or(NONE, |&(_, a)| a);
            let inside = answer.min(inherited);
            table.push(first, inside);
            open.push((last, inside));
        }
        close_before(&mut table, &mut open, None);
        table
    }

    fn push(&mut self, start: A, answer: u32) {
        if *self.starts.last().expect("table starts with ZERO") == start {
            self.starts.pop();
            self.answers.pop();
        }
        if self.answers.last() == Some(&answer) {
            return;
        }
        self.starts.push(start);
        self.answers.push(answer);
    }

    fn lookup(&self, address: A) -> u32 {
        let i = self.starts.partition_point(|&s| s <= address);
        // starts[0] == ZERO, so i >= 1.
        self.answers[i - 1]
    }
}

/// Pops the open blocks that end before `next` (all of them when `next` is None),
/// recording where the enclosing block's answer takes over again.
fn close_before<A: Address>(table: &mut RangeTable<A>, open: &mut Vec<(A, u32)>, next: Option<A>) {
    while let Some(&(last, _)) = open.last() {
        if matches!(next, Some(n) if n <= last) {
            break;
        }
        open.pop();
        let after = open.last().map_or(NONE, |&(_, a)| a);
        if let Some(resume) = last.successor() {
            table.push(resume, after);
        }
    }
}

/// Networks mapped to the index of the first rule that lists them.
#[derive(Clone, Debug, Default)]
pub struct CidrTable {
    v4: RangeTable<u32>,
    v6: RangeTable<u128>,
    len: usize,
}

impl CidrTable {
    /// `networks`: (network, rule index). The lowest index wins where networks overlap.
    pub fn new(networks: impl IntoIterator<Item = (IpNet, u32)>) -> CidrTable {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, index) in networks {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()), index)),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()), index)),
            }
        }
        let len = v4.len() + v6.len();
        CidrTable { v4: RangeTable::build(v4), v6: RangeTable::build(v6), len }
    }

    /// The lowest rule index whose network contains `address`. An IPv4-mapped IPv6
    /// address (`::ffff:a.b.c.d`) is looked up as the IPv4 address it carries.
    #[inline]
    pub fn lookup(&self, address: IpAddr) -> Option<u32> {
        let answer = match address {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(u32::from(v4)),
                None => self.v6.lookup(u128::from(a)),
            },
        };
        (answer != NONE).then_some(answer)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.lookup(address).is_some()
    }

    /// Number of networks it was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(nets: &[&str]) -> CidrTable {
        CidrTable::new(nets.iter().enumerate().map(|(i, n)| (n.parse().unwrap(), i as u32)))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The obvious answer, by scanning every network in order.
    fn scan(nets: &[&str], address: IpAddr) -> Option<u32> {
        let address = match address {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(address, IpAddr::V4),
            a => a,
        };
        nets.iter().position(|n| n.parse::<IpNet>().unwrap().contains(&address)).map(|i| i as u32)
    }

    #[test]
    fn first_listed_network_wins_when_nested() {
        let nets = ["10.1.0.0/16", "10.0.0.0/8", "10.1.2.0/24", "0.0.0.0/0"];
        let t = table(&nets);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(0));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(1));
        assert_eq!(t.lookup(ip("11.0.0.1")), Some(3));
        assert_eq!(t.lookup(ip("::1")), None);
    }

    #[test]
    fn inner_network_listed_first_only_owns_its_range() {
        let t = table(&["192.168.1.0/24", "192.168.0.0/16"]);
        assert_eq!(t.lookup(ip("192.168.1.255")), Some(0));
        assert_eq!(t.lookup(ip("192.168.2.0")), Some(1));
        assert_eq!(t.lookup(ip("192.168.0.255")), Some(1));
        assert_eq!(t.lookup(ip("192.169.0.0")), None);
        assert_eq!(t.lookup(ip("192.167.255.255")), None);
    }

    #[test]
    fn edges_of_the_address_space() {
        let t = table(&["255.255.255.255/32", "0.0.0.0/32", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]);
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(0));
        assert_eq!(t.lookup(ip("255.255.255.254")), None);
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(1));
        assert_eq!(t.lookup(ip("0.0.0.1")), None);
        assert_eq!(t.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), Some(2));
    }

    #[test]
    fn ipv6_and_ipv4_mapped() {
        let t = table(&["2001:db8::/32", "10.0.0.0/8", "2001:db8:1::/48"]);
        assert_eq!(t.lookup(ip("2001:db8:1::5")), Some(0));
        assert_eq!(t.lookup(ip("2001:db9::")), None);
        assert_eq!(t.lookup(ip("::ffff:10.9.8.7")), Some(1));
    }

    /// Every edge of every network: its first and last address and the addresses
    /// just outside it.
    fn edges(nets: &[IpNet]) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                    for a in [Some(first), Some(last), first.checked_sub(1), last.checked_add(1)].into_iter().flatten()
                    {
                        out.push(IpAddr::V4(a.into()));
                    }
                }
                IpNet::V6(n) => {
                    let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                    for a in [Some(first), Some(last), first.checked_sub(1), last.checked_add(1)].into_iter().flatten()
                    {
                        out.push(IpAddr::V6(a.into()));
                    }
                }
            }
        }
        out
    }

    #[track_caller]
    fn assert_edges_agree(nets: &[IpNet]) {
        let t = CidrTable::new(nets.iter().enumerate().map(|(i, n)| (*n, i as u32)));
        for p in edges(nets) {
            let linear = nets.iter().position(|n| n.contains(&p)).map(|i| i as u32);
            assert_eq!(t.lookup(p), linear, "address {p} with networks {nets:?}");
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// A nested network that ends where its enclosing network ends: whichever
    /// is listed first owns that last address. (Closing the enclosing network
    /// one address early leaves the range starts out of order; which answer the
    /// binary search then finds depends on the listing order, so both orders.)
    #[test]
    fn nested_network_at_the_last_address_of_its_parent() {
        let t = table(&["10.0.0.0/8", "10.255.255.255/32"]);
        assert_eq!(t.lookup(ip("10.255.255.255")), Some(0));
        assert_eq!(t.lookup(ip("10.255.255.254")), Some(0));
        assert_eq!(t.lookup(ip("11.0.0.0")), None);
        let t = table(&["10.255.255.255/32", "10.0.0.0/8"]);
        assert_eq!(t.lookup(ip("10.255.255.255")), Some(0));
        assert_eq!(t.lookup(ip("10.255.255.254")), Some(1));
        assert_eq!(t.lookup(ip("11.0.0.0")), None);
        let t = table(&["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", "2001:db8::/32"]);
        assert_eq!(t.lookup(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")), Some(0));
        assert_eq!(t.lookup(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe")), Some(1));
        assert_eq!(t.lookup(ip("2001:db9::")), None);
    }

    /// Hand-made edge cases: networks nested at the first and at the last address
    /// of their parent (listed before and after it), adjacent networks, networks
    /// sharing an edge with the address space's ends; both families.
    #[test]
    fn edges_of_nested_and_adjacent_networks_agree_with_a_scan() {
        let cases: &[&[&str]] = &[
            &["10.0.0.0/8", "10.255.255.255/32"],
            &["10.255.255.255/32", "10.0.0.0/8"],
            &["10.0.0.0/8", "10.0.0.0/32"],
            &["10.0.0.0/32", "10.0.0.0/8"],
            &["10.0.0.0/8", "10.255.255.0/24", "10.255.255.255/32", "10.0.0.0/24", "10.0.0.0/32"],
            &["10.255.255.255/32", "10.255.255.0/24", "10.0.0.0/8"],
            &["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/8"],
            &["10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/9", "11.0.0.0/8", "9.255.255.255/32"],
            &["0.0.0.0/0", "255.255.255.255/32", "0.0.0.0/32"],
            &["255.255.255.255/32", "255.0.0.0/8", "0.0.0.0/0"],
            &["192.168.0.0/16", "192.168.255.0/24", "192.168.255.128/25", "192.168.255.255/32", "192.169.0.0/16"],
            &["2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128"],
            &["2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", "2001:db8::/32", "2001:db8::/128"],
            &["2001:db8::/33", "2001:db8:8000::/33", "2001:db8::/32", "2001:db9::/32"],
            &["::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "::/128"],
            &["fd00::/8", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120", "10.0.0.0/8", "10.255.255.255/32"],
        ];
        for case in cases {
            assert_edges_agree(&nets(case));
        }
    }

    /// Generated families: each random network comes with children nested at
    /// its first and last addresses and a neighbour right after it, listed in
    /// a shuffled order, so that every kind of edge meets every listing order.
    #[test]
    fn generated_edges_agree_with_a_scan() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let v6 = round % 2 == 1;
            let bits: u8 = if v6 { 128 } else { 32 };
            let mut list: Vec<IpNet> = Vec::new();
            for _ in 0..1 + next() % 4 {
                let len = (next() % u64::from(bits - 1)) as u8 + 1;
                let child = len + 1 + (next() % u64::from(bits - len)) as u8;
                let raw = (u128::from(next()) << 64) | u128::from(next());
                let make = |addr: u128, len: u8| -> IpNet {
                    if v6 {
                        ipnet::Ipv6Net::new(addr.into(), len).unwrap().trunc().into()
                    } else {
                        ipnet::Ipv4Net::new((addr as u32).into(), len).unwrap().trunc().into()
                    }
                };
                let parent = make(raw, len);
                let (first, last) = match parent {
                    IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
                    IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
                };
                list.push(parent);
                list.push(make(first, child));
                list.push(make(last, child.min(bits)));
                if last < if v6 { u128::MAX } else { u128::from(u32::MAX) } {
                    list.push(make(last + 1, len));
                }
            }
            // A Fisher-Yates shuffle, so parents come before or after their children.
            for i in (1..list.len()).rev() {
                list.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            assert_edges_agree(&list);
        }
    }

    #[test]
    fn agrees_with_a_scan_on_many_nested_and_duplicate_networks() {
        let nets = [
            "10.0.0.0/8",
            "10.0.0.0/8",
            "10.128.0.0/9",
            "10.0.0.0/24",
            "10.0.0.128/25",
            "172.16.0.0/12",
            "0.0.0.0/1",
            "10.0.0.7/32",
            "128.0.0.0/1",
            "fd00::/8",
            "fd00:1::/32",
            "::/0",
        ];
        let t = table(&nets);
        let mut x: u32 = 0x1234_5678;
        let mut probes: Vec<IpAddr> = [
            "10.0.0.7",
            "10.0.0.8",
            "10.0.0.200",
            "10.200.0.1",
            "172.31.255.255",
            "172.32.0.0",
            "127.0.0.1",
            "200.1.1.1",
            "fd00:1::1",
            "fd01::",
            "fe80::1",
        ]
        .iter()
        .map(|s| ip(s))
        .collect();
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            probes.push(IpAddr::V4(x.into()));
            probes.push(IpAddr::V4((0x0A00_0000 | (x & 0x00FF_FFFF)).into()));
        }
        for p in probes {
            assert_eq!(t.lookup(p), scan(&nets, p), "address {p}");
        }
    }
}
