mod support;
use trainctl::config::Doc;
fn show(t: &str) {
    match Doc::parse(t, "x") {
        Ok(d) => println!("{t:?} => {}", d.tree),
        Err(e) => println!("{t:?} => ERR {e}"),
    }
}
#[test]
fn explore() {
    show("a: TRUE\nb: 0x40000\nc: 1.28e2\nd: .1\ne: 2e1\nf: 1.0E-3\ng: +1\nh: 42.0\n");
    show("a:  # c\nb: *x\n");
    show("d: >-  # c\n  Synthetic a\n  b.\n");
    show("m: {a: &p 0.1, b: *p, c: }\n");
    show("x:\n  - a\n  - b\n");
    println!("{}", serde_json::Value::from(9007199254740992.0f64));
    println!("{}", trainctl::identity::canonical_json(&serde_json::Value::from(9007199254740992.0f64)));
}
