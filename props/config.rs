mod support;
#[test]
fn explore() {
    for t in ["9007199254740991.0", "9007199254740991", "9.007199254740991e15", "4503599627370497.0", "0.30000000000000004", "123456789.12345678"] {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        let exact: f64 = t.parse().unwrap();
        println!("{t}: serde {:?} exact {exact:?} eq {}", v.as_f64(), v.as_f64()==Some(exact));
    }
    let x = 9007199254740991.0f64;
    println!("{}", trainctl::identity::canonical_json(&serde_json::Value::from(x)));
}
