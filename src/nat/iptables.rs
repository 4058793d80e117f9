//! A host that runs Docker sets iptables' `FORWARD` policy to `DROP`, and a drop in
//! iptables' table cannot be overridden from devbox's own nftables table. Docker's documented
//! place for the rules of others is the `DOCKER-USER` chain, which `FORWARD` jumps to first
//! (<https://docs.docker.com/engine/network/packet-filtering-firewalls/#add-iptables-policies-before-dockers-rules>):
//! devbox inserts two accept rules there per machine, the same two its own table has, tagged
//! `devbox:dbxN`, and deletes exactly the rules with that tag. Two machines of one swarm get
//! their swarm ports there too, tagged `devbox:swarm:dbxA:dbxB` (`super::swarm`). Pure: argv
//! lists only.

use super::swarm::SwarmPair;

/// Docker's chain for rules of others.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// `-w`: wait for the xtables lock instead of failing while Docker changes its rules.
const WAIT: [&str; 2] = ["-w", "5"];

fn tag(link: &str) -> String {
    format!("devbox:{link}")
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// `iptables -I DOCKER-USER …` for machine `link` with host-only `subnet`: out from the
/// machine's subnet to anything but another machine, and replies back in.
pub fn docker_user_insert_argvs(link: &str, subnet: &str) -> Vec<Vec<String>> {
    let tag = tag(link);
    let head = |v: &mut Vec<String>| {
        v.extend(argv(&["iptables"]));
        v.extend(argv(&WAIT));
        v.extend(argv(&["-I", DOCKER_USER]));
    };
    let mut out = Vec::new();
    head(&mut out);
    out.extend(argv(&[
        "-i",
        link,
        "-s",
        subnet,
        "!",
        "-o",
        "dbx+",
        "-m",
        "comment",
        "--comment",
        &tag,
        "-j",
        "ACCEPT",
    ]));
    let mut back = Vec::new();
    head(&mut back);
    back.extend(argv(&[
        "-o",
        link,
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-m",
        "comment",
        "--comment",
        &tag,
        "-j",
        "ACCEPT",
    ]));
    vec![out, back]
}

/// `iptables -I DOCKER-USER …` for the swarm ports between the pair's machines, both ways
/// (the same four rules as devbox's own table: `super::swarm::add_pair`), and the replies
/// between them, which no machine's own rules let through when it started before the chain
/// existed.
pub fn docker_user_pair_insert_argvs(pair: &SwarmPair) -> Vec<Vec<String>> {
    let tag = pair.iptables_tag();
    let [x, y] = pair.links();
    let net = |l: &str| {
        crate::net::devbox_link(l)
            .expect("a pair holds machine links only")
            .subnet
            .to_string()
    };
    // `iptables -I DOCKER-USER -i FROM -o TO -s FROM's /24 -d TO's /24 MATCH… -j ACCEPT`.
    let accept = |from: &str, to: &str, matches: &[&str]| {
        let (src, dst) = (net(from), net(to));
        let mut v = argv(&["iptables"]);
        v.extend(argv(&WAIT));
        v.extend(argv(&[
            "-I",
            DOCKER_USER,
            "-i",
            from,
            "-o",
            to,
            "-s",
            &src,
            "-d",
            &dst,
        ]));
        v.extend(argv(matches));
        v.extend(argv(&["-m", "comment", "--comment", &tag, "-j", "ACCEPT"]));
        v
    };
    let mut out = Vec::new();
    for (from, to) in [(x, y), (y, x)] {
        for (proto, ports) in [("tcp", super::SWARM_TCP), ("udp", super::SWARM_UDP)] {
            let ports = format!("{},{}", ports[0], ports[1]);
            out.push(accept(
                from,
                to,
                &["-p", proto, "-m", "multiport", "--dports", &ports],
            ));
        }
        out.push(accept(
            from,
            to,
            &["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"],
        ));
    }
    out
}

/// The `iptables -D DOCKER-USER …` commands that delete every rule tagged for `link`, from
/// the chain as `iptables -S DOCKER-USER` prints it. Only lines carrying the exact tag as a
/// whole word are taken (iptables-nft prints it in double quotes, iptables-legacy bare);
/// devbox's tags hold no spaces, so such a line splits into the arguments iptables printed.
pub fn docker_user_delete_argvs(listing: &str, link: &str) -> Vec<Vec<String>> {
    let tag = tag(link);
    delete_tagged(listing, |t| t == tag)
}

/// The deletes of every swarm pair rule that names `link`.
pub fn docker_user_pair_delete_argvs(listing: &str, link: &str) -> Vec<Vec<String>> {
    delete_tagged(listing, |t| {
        SwarmPair::of_iptables_tag(t).is_some_and(|p| p.links().contains(&link))
    })
}

fn delete_tagged(listing: &str, ours: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    listing
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| {
                    w.strip_prefix('"')
                        .and_then(|w| w.strip_suffix('"'))
                        .unwrap_or(w)
                })
                .collect();
            let tagged = words
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1].starts_with("devbox:") && ours(w[1]));
            match words.as_slice() {
                ["-A", chain, rest @ ..] if *chain == DOCKER_USER && tagged => {
                    let mut v = argv(&["iptables"]);
                    v.extend(argv(&WAIT));
                    v.extend(argv(&["-D", DOCKER_USER]));
                    v.extend(rest.iter().map(|s| s.to_string()));
                    Some(v)
                }
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_tagged_and_deletes_take_only_the_tagged() {
        let ins = docker_user_insert_argvs("dbx0", "192.168.64.0/24");
        assert_eq!(
            ins[0].join(" "),
            "iptables -w 5 -I DOCKER-USER -i dbx0 -s 192.168.64.0/24 ! -o dbx+ -m comment \
             --comment devbox:dbx0 -j ACCEPT"
        );
        assert!(
            ins[1]
                .join(" ")
                .contains("-o dbx0 -m conntrack --ctstate RELATED,ESTABLISHED")
        );

        // As `iptables -S DOCKER-USER` prints it: iptables-nft 1.8.9 quotes the comment,
        // iptables-legacy does not.
        let listing = "-N DOCKER-USER\n\
            -A DOCKER-USER -o dbx0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"devbox:dbx0\" -j ACCEPT\n\
            -A DOCKER-USER -s 192.168.64.0/24 -i dbx0 ! -o dbx+ -m comment --comment devbox:dbx0 -j ACCEPT\n\
            -A DOCKER-USER -i dbx1 -m comment --comment devbox:dbx1 -j ACCEPT\n\
            -A DOCKER-USER -i dbx0 -m comment --comment devbox:dbx0x -j ACCEPT\n\
            -A DOCKER-USER -i eth0 -m comment --comment \"devbox:dbx0 by hand\" -j DROP\n\
            -A DOCKER-USER -j RETURN\n";
        let del = docker_user_delete_argvs(listing, "dbx0");
        assert_eq!(del.len(), 2, "{del:?}");
        assert_eq!(
            del[1].join(" "),
            "iptables -w 5 -D DOCKER-USER -s 192.168.64.0/24 -i dbx0 ! -o dbx+ -m comment \
             --comment devbox:dbx0 -j ACCEPT"
        );
        assert!(!del[0].iter().any(|a| a.contains('"')), "{del:?}");
        assert!(!del[0].iter().any(|a| a.contains('"')), "{del:?}");
        assert!(docker_user_delete_argvs(listing, "dbx2").is_empty());
    }

    #[test]
    fn a_swarm_pair_gets_its_four_rules_and_either_link_takes_them() {
        let pair = SwarmPair::new("dbx1", "dbx0").unwrap();
        let ins = docker_user_pair_insert_argvs(&pair);
        assert_eq!(ins.len(), 6);
        assert_eq!(
            ins[0].join(" "),
            "iptables -w 5 -I DOCKER-USER -i dbx0 -o dbx1 -s 192.168.64.0/24 -d \
             192.168.65.0/24 -p tcp -m multiport --dports 2377,7946 -m comment --comment \
             devbox:swarm:dbx0:dbx1 -j ACCEPT"
        );
        assert!(
            ins[1]
                .join(" ")
                .contains("-p udp -m multiport --dports 7946,4789")
        );
        assert!(
            ins[2]
                .join(" ")
                .contains("-m conntrack --ctstate RELATED,ESTABLISHED")
        );
        assert!(ins[4].join(" ").contains("-i dbx1 -o dbx0"), "{:?}", ins[4]);
        let listing = "-N DOCKER-USER\n\
            -A DOCKER-USER -s 192.168.64.0/24 -d 192.168.65.0/24 -i dbx0 -o dbx1 -p tcp -m multiport --dports 2377,7946 -m comment --comment \"devbox:swarm:dbx0:dbx1\" -j ACCEPT\n\
            -A DOCKER-USER -s 192.168.65.0/24 -d 192.168.66.0/24 -i dbx1 -o dbx2 -p udp -m multiport --dports 7946,4789 -m comment --comment devbox:swarm:dbx1:dbx2 -j ACCEPT\n\
            -A DOCKER-USER -i dbx0 -m comment --comment devbox:dbx0 -j ACCEPT\n\
            -A DOCKER-USER -j RETURN\n";
        let del = docker_user_pair_delete_argvs(listing, "dbx0");
        assert_eq!(del.len(), 1, "{del:?}");
        assert!(
            del[0]
                .join(" ")
                .ends_with("--comment devbox:swarm:dbx0:dbx1 -j ACCEPT")
        );
        assert_eq!(docker_user_pair_delete_argvs(listing, "dbx1").len(), 2);
        assert!(docker_user_pair_delete_argvs(listing, "dbx3").is_empty());
        // The link's own rule is not a pair's, and a pair's is not the link's.
        assert_eq!(docker_user_delete_argvs(listing, "dbx0").len(), 1);
    }
}
