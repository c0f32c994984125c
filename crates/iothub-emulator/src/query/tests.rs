//! Unit tests of the query module: parsing, evaluation, aggregation and rejection of
//! malformed queries.

use serde_json::{Value, json};

use super::{Query, Source};

/// Parses a query that must be valid.
fn q(text: &str) -> Query {
    Query::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

/// The error message of a query that must be invalid.
fn err(text: &str) -> String {
    match Query::parse(text) {
        Ok(query) => panic!("{text:?} should be rejected, parsed as {query:?}"),
        Err(e) => e.message().to_owned(),
    }
}

/// Does `SELECT * FROM devices WHERE <cond>` match `doc`?
fn hits(cond: &str, doc: &Value) -> bool {
    q(&format!("SELECT * FROM devices WHERE {cond}")).matches(doc)
}

/// A device twin in the shape GET /twins/{id} returns.
fn twin(id: &str, tags: Value, reported: Value) -> Value {
    let mut reported = reported;
    if let Some(map) = reported.as_object_mut() {
        map.insert(
            "$metadata".into(),
            json!({"$lastUpdated": "2024-01-01T00:00:00Z"}),
        );
        map.insert("$version".into(), json!(1));
    }
    json!({
        "deviceId": id,
        "etag": "AAAAAAAAAAE=",
        "deviceEtag": "MTIz",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
        "version": 2,
        "tags": tags,
        "properties": {
            "desired": {"x": 1, "$metadata": {}, "$version": 1},
            "reported": reported,
        },
        "capabilities": {"iotEdge": false},
    })
}

/// The sample document most condition tests run against.
fn doc() -> Value {
    let mut d = twin(
        "d1",
        json!({
            "location": {"region": "US", "plant": "Redmond43"},
            "my key": "spaced",
            "it's": "quoted",
            "a.b": "dotted",
            "n": null,
            "flag": true,
            "list": [1, 2, 3],
            "count": 3,
            "big": 18446744073709551615u64,
            "neg": -5,
            "ratio": 0.5,
            "name": "Thermostat",
            "unicode": "caf\u{e9} \u{1F600}",
        }),
        json!({"temp": 21.5, "firmware": "1.2.0"}),
    );
    d["$weird"] = json!("dollar");
    d
}

/// Three device twins for aggregation tests.
fn fleet() -> Vec<Value> {
    vec![
        twin(
            "d1",
            json!({"region": "US", "tier": 1}),
            json!({"temp": 20}),
        ),
        twin(
            "d2",
            json!({"region": "EU", "tier": 1.0}),
            json!({"temp": 25}),
        ),
        twin(
            "d3",
            json!({"region": "US", "tier": 2}),
            json!({"temp": 30}),
        ),
        twin("d4", json!({"tier": null}), json!({})),
        twin("d5", json!({}), json!({"temp": 40})),
    ]
}

/// The deviceIds of the documents that `query` matches.
fn matching_ids<'a>(query: &Query, docs: &'a [Value]) -> Vec<&'a str> {
    docs.iter()
        .filter(|d| query.matches(d))
        .filter_map(|d| d["deviceId"].as_str())
        .collect()
}

#[test]
fn select_star_from_devices() {
    let query = q("SELECT * FROM devices");
    assert_eq!(query.source(), Source::Devices);
    assert_eq!(query.top(), None);
    assert!(!query.is_aggregate());
    assert!(query.is_star());
    assert!(query.matches(&doc()));
    assert_eq!(query.project(&doc()), doc());
    assert!(!q("SELECT deviceId FROM devices").is_star());
    assert!(!q("SELECT COUNT() FROM devices").is_star());
}

#[test]
fn select_from_modules() {
    let query = q("SELECT * FROM devices.modules WHERE moduleId = 'm1'");
    assert_eq!(query.source(), Source::Modules);
    let mut module = doc();
    module["moduleId"] = json!("m1");
    assert!(query.matches(&module));
    assert!(!query.matches(&doc()));
}

#[test]
fn keywords_and_function_names_are_case_insensitive() {
    let query = q(
        "sElEcT toP 2 * fRoM DEVICES wHeRe tags.location.region = 'US' AnD nOt \
         is_defined(tags.missing) oR Is_NuLl(tags.n)",
    );
    assert_eq!(query.top(), Some(2));
    assert!(query.matches(&doc()));
    assert_eq!(q("select * from Devices.Modules").source(), Source::Modules);
    assert_eq!(q("select * from devices.JOBS").source(), Source::DeviceJobs);
    assert!(hits(
        "tags.flag = TRUE AND tags.n = NULL AND NOT tags.flag = False",
        &doc()
    ));
    let grouped = q("select count() as n from devices group by tags.region");
    assert!(grouped.is_aggregate());
}

#[test]
fn identifiers_are_case_sensitive() {
    assert!(hits("tags.location.region = 'US'", &doc()));
    assert!(!hits("tags.Location.region = 'US'", &doc()));
    assert!(!hits("Tags.location.region = 'US'", &doc()));
}

#[test]
fn whitespace_is_flexible() {
    let query = q("  SELECT*FROM\tdevices\nWHERE(tags.count>=3)AND tags.neg<>-4  ");
    assert!(query.matches(&doc()));
    assert!(hits("tags.count=3", &doc()));
}

#[test]
fn top_values() {
    assert_eq!(q("SELECT TOP 0 * FROM devices").top(), Some(0));
    assert_eq!(q("SELECT TOP 10 deviceId FROM devices").top(), Some(10));
    assert_eq!(q("SELECT TOP 5 COUNT() FROM devices").top(), Some(5));
    assert_eq!(
        err("SELECT TOP 99999999999999999999999 * FROM devices"),
        "Invalid query at position 12: TOP 99999999999999999999999 is too large"
    );
    assert_eq!(
        err("SELECT TOP -1 * FROM devices"),
        "Syntax error at position 12: expected a non-negative integer after TOP, found '-'"
    );
    assert_eq!(
        err("SELECT TOP 1.5 * FROM devices"),
        "Syntax error at position 12: expected a non-negative integer after TOP, found '1'"
    );
}

#[test]
fn projection_keys_and_aliases() {
    let query = q(
        "SELECT deviceId, properties.reported.temp, tags.location.region AS r, \
         tags['my key'], $weird FROM devices",
    );
    assert!(!query.is_aggregate());
    assert_eq!(
        query.project(&doc()),
        json!({"deviceId": "d1", "temp": 21.5, "r": "US", "my key": "spaced", "$weird": "dollar"})
    );
}

#[test]
fn projection_omits_undefined_and_keeps_null_and_objects() {
    let query = q(
        "SELECT tags.missing, tags.n, tags.location, x509Thumbprint.nope.deeper \
         FROM devices",
    );
    assert_eq!(
        query.project(&doc()),
        json!({"n": null, "location": {"region": "US", "plant": "Redmond43"}})
    );
}

#[test]
fn bracket_keys() {
    let d = doc();
    assert!(hits("tags['my key'] = 'spaced'", &d));
    assert!(hits("tags[\"my key\"] = 'spaced'", &d));
    assert!(hits("tags['it''s'] = 'quoted'", &d));
    assert!(hits("tags['it\\'s'] = 'quoted'", &d));
    assert!(hits("tags['a.b'] = 'dotted'", &d));
    assert!(hits("tags[ 'location' ].region = 'US'", &d));
    assert!(hits("tags['location']['region'] = 'US'", &d));
    // A dotted path is a nested lookup, not a key containing a dot.
    assert!(!hits("tags.a.b = 'dotted'", &d));
    assert_eq!(
        q("SELECT tags['my key'] AS k FROM devices").project(&d),
        json!({"k": "spaced"})
    );
}

#[test]
fn collection_prefix_is_stripped() {
    let d = doc();
    assert!(hits("devices.tags.location.region = 'US'", &d));
    assert!(hits("DEVICES.tags.location.region = 'US'", &d));
    assert_eq!(
        q("SELECT devices.deviceId, devices.tags.location.region AS r FROM devices").project(&d),
        json!({"deviceId": "d1", "r": "US"})
    );
    let mut module = doc();
    module["moduleId"] = json!("m1");
    let query = q(
        "SELECT devices.modules.moduleId, deviceId FROM devices.modules \
         WHERE devices.modules.tags.location.region = 'US'",
    );
    assert!(query.matches(&module));
    assert_eq!(
        query.project(&module),
        json!({"moduleId": "m1", "deviceId": "d1"})
    );
    // Only the prefix of the queried collection is stripped.
    assert!(!q("SELECT * FROM devices.modules WHERE devices.deviceId = 'd1'").matches(&module));
}

#[test]
fn comparison_table() {
    let d = doc();
    let cases: &[(&str, bool)] = &[
        // numbers, int vs float
        ("tags.count = 3", true),
        ("tags.count = 3.0", true),
        ("tags.count = 3e0", true),
        ("tags.count != 3", false),
        ("tags.count <> 4", true),
        ("tags.count < 3.5", true),
        ("tags.count <= 3", true),
        ("tags.count > 3", false),
        ("tags.count >= 3", true),
        ("tags.ratio < 1", true),
        ("tags.ratio = 0.5", true),
        ("tags.neg < 0", true),
        ("tags.neg = -5", true),
        ("tags.neg > -5.5", true),
        ("tags.big = 18446744073709551615", true),
        ("tags.big > 18446744073709551614", true),
        ("tags.big > -1", true),
        ("properties.reported.temp > 21", true),
        ("properties.reported.temp = 21.5", true),
        ("1e2 = 100", true),
        // strings: exact and lexicographic, case-sensitive
        ("tags.name = 'Thermostat'", true),
        ("tags.name = 'thermostat'", false),
        ("tags.name > 'Thermo'", true),
        ("tags.name < 'a'", true),
        ("tags.name >= 'Thermostat'", true),
        ("properties.reported.firmware < '1.10'", false),
        ("tags.unicode = 'café 😀'", true),
        // booleans and null: only = and !=
        ("tags.flag = true", true),
        ("tags.flag != false", true),
        ("tags.flag > false", false),
        ("tags.flag >= true", false),
        ("tags.n = null", true),
        ("tags.n != null", false),
        ("tags.n <= null", false),
        // type mismatch: = and ordering false, != true
        ("tags.count = '3'", false),
        ("tags.count != '3'", true),
        ("tags.count < '4'", false),
        ("tags.name = 1", false),
        ("tags.n = false", false),
        ("tags.n != false", true),
        ("tags.flag = 1", false),
        // arrays and objects compare deeply with = only
        ("tags.list = [1, 2.0, 3]", true),
        ("tags.list = [1, 2]", false),
        ("tags.list != [3, 2, 1]", true),
        ("tags.list < [9]", false),
        // undefined: every comparison false, even !=
        ("tags.missing = 1", false),
        ("tags.missing != 1", false),
        ("tags.missing <> 'x'", false),
        ("tags.missing < 1", false),
        ("tags.missing = null", false),
        ("tags.missing != null", false),
        ("tags.missing = tags.missing", false),
        ("tags.count.deeper = 3", false),
        // either side may be a literal or a path
        ("3 = tags.count", true),
        ("'US' = tags.location.region", true),
        ("1 = 1", true),
        ("1 < 2 AND 'a' < 'b'", true),
        ("tags.count = properties.desired.x", false),
        ("properties.desired.x < tags.count", true),
        ("deviceId = 'd1'", true),
        ("properties.reported.$version = 1", true),
        ("$weird = 'dollar'", true),
        ("capabilities.iotEdge = false", true),
    ];
    let mut failures = Vec::new();
    for &(cond, want) in cases {
        match Query::parse(&format!("SELECT * FROM devices WHERE {cond}")) {
            Ok(query) if query.matches(&d) == want => {}
            Ok(_) => failures.push(format!("{cond}: expected {want}")),
            Err(e) => failures.push(format!("{cond}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn not_and_precedence() {
    let d = doc();
    // NOT of an undefined comparison is true: two-valued logic.
    assert!(hits("NOT tags.missing = 1", &d));
    assert!(hits("NOT (tags.missing != 1)", &d));
    assert!(!hits("NOT tags.count = 3", &d));
    assert!(hits("NOT NOT tags.count = 3", &d));
    // AND binds tighter than OR: true OR (false AND false).
    assert!(hits(
        "tags.count = 3 OR tags.count = 4 AND tags.count = 5",
        &d
    ));
    assert!(!hits(
        "(tags.count = 3 OR tags.count = 4) AND tags.count = 5",
        &d
    ));
    // NOT binds tighter than AND/OR: (NOT true) OR true.
    assert!(hits("NOT tags.count = 3 OR tags.count = 3", &d));
    assert!(!hits("NOT (tags.count = 3 OR tags.count = 3)", &d));
    assert!(!hits("NOT tags.count = 3 AND tags.count = 3", &d));
    assert!(hits("((((tags.count = 3))))", &d));
    assert!(hits(
        "tags.count = 1 OR tags.count = 2 OR tags.count = 3",
        &d
    ));
    assert!(!hits(
        "tags.count = 3 AND tags.flag = true AND tags.n != null",
        &d
    ));
}

#[test]
fn in_and_nin() {
    let d = doc();
    let cases: &[(&str, bool)] = &[
        ("tags.location.region IN ['EU', 'US']", true),
        ("tags.location.region IN ['EU', 'us']", false),
        ("tags.location.region NIN ['EU', 'us']", true),
        ("tags.location.region NIN ['US']", false),
        ("tags.count IN [1.0, 3.0]", true),
        ("tags.count IN ['3']", false),
        ("tags.count NIN ['3']", true),
        ("tags.n IN [null]", true),
        ("tags.flag in [false, true]", true),
        ("tags.list IN [[1, 2, 3], 'x']", true),
        ("tags.count IN []", false),
        ("tags.count NIN []", true),
        // undefined is in nothing and not "not in" anything
        ("tags.missing IN [1]", false),
        ("tags.missing NIN [1]", false),
        ("NOT tags.missing IN [1]", true),
        ("'US' IN ['US']", true),
    ];
    for &(cond, want) in cases {
        assert_eq!(hits(cond, &d), want, "{cond}");
    }
}

#[test]
fn functions() {
    let d = doc();
    let cases: &[(&str, bool)] = &[
        ("IS_DEFINED(tags.count)", true),
        ("IS_DEFINED(tags.n)", true),
        ("IS_DEFINED(tags.missing)", false),
        ("NOT IS_DEFINED(tags.missing)", true),
        ("is_defined(devices.tags.count)", true),
        ("IS_NULL(tags.n)", true),
        ("IS_NULL(tags.count)", false),
        ("IS_NULL(tags.missing)", false),
        ("IS_NULL(null)", true),
        ("IS_BOOL(tags.flag)", true),
        ("IS_BOOL(capabilities.iotEdge)", true),
        ("IS_BOOL(tags.name)", false),
        ("IS_NUMBER(tags.ratio)", true),
        ("IS_NUMBER(tags.big)", true),
        ("IS_NUMBER('1')", false),
        ("IS_NUMBER(tags.missing)", false),
        ("IS_STRING(tags.name)", true),
        ("IS_STRING(tags.list)", false),
        ("IS_OBJECT(tags.location)", true),
        ("IS_OBJECT(tags.list)", false),
        ("IS_OBJECT(tags.missing)", false),
        ("IS_ARRAY(tags.list)", true),
        ("IS_PRIMITIVE(tags.n)", true),
        ("IS_PRIMITIVE(tags.name)", true),
        ("IS_PRIMITIVE(tags.flag)", true),
        ("IS_PRIMITIVE(tags.count)", true),
        ("IS_PRIMITIVE(tags.location)", false),
        ("IS_PRIMITIVE(tags.list)", false),
        ("IS_PRIMITIVE(tags.missing)", false),
        ("STARTSWITH(tags.name, 'Therm')", true),
        ("STARTSWITH(tags.name, 'therm')", false),
        ("STARTSWITH(tags.name, '')", true),
        ("StartsWith(tags.location.plant, 'Red')", true),
        ("STARTSWITH(tags.count, '3')", false),
        ("STARTSWITH(tags.missing, 'a')", false),
        ("STARTSWITH(tags.name, tags.missing)", false),
        ("STARTSWITH(tags.name, tags.name)", true),
        ("ENDSWITH(tags.name, 'stat')", true),
        ("endswith(tags.name, 'Therm')", false),
        ("ENDSWITH(tags.location.plant, '43')", true),
        ("ENDSWITH(tags.missing, '')", false),
        ("NOT STARTSWITH(tags.missing, 'a')", true),
        (
            "STARTSWITH ( tags.name , 'T' ) AND IS_STRING( deviceId )",
            true,
        ),
    ];
    for &(cond, want) in cases {
        assert_eq!(hits(cond, &d), want, "{cond}");
    }
}

#[test]
fn string_literals_and_escapes() {
    let mut d = doc();
    d["tags"]["s"] = json!("it's \"q\" \\ /\n\té😀");
    assert!(hits(
        r#"tags.s = 'it''s "q" \\ /\n\t\u00e9\ud83d\ude00'"#,
        &d
    ));
    assert!(hits(r#"tags.s = "it's \"q\" \\ \/\n\té😀""#, &d));
    assert!(hits(r#"tags.s = 'it\'s "q" \\ /\n	é😀'"#, &d));
    assert!(hits("tags.name = \"Thermostat\"", &d));
    assert!(hits("tags.name != ''", &d));
    assert!(hits("'' = \"\"", &d));
    assert!(hits("'a''' = \"a'\"", &d));
    assert!(hits("\"a\"\"\" = 'a\"'", &d));
}

#[test]
fn numeric_literals() {
    let d = json!({"tags": {"a": -0.25, "b": 12345678901234567890u64, "c": 1e300, "z": 0}});
    assert!(hits("tags.a = -0.25", &d));
    assert!(hits("tags.a = -25e-2", &d));
    assert!(hits("tags.a = -2.5E-1", &d));
    assert!(hits("tags.b = 12345678901234567890", &d));
    assert!(hits("tags.c = 1e300", &d));
    assert!(hits("tags.c > 99999999999999999999999999", &d));
    assert!(hits("tags.z = -0", &d));
    assert!(hits("tags.z = -0.0", &d));
    assert!(hits("tags.z = 0e5", &d));
}

#[test]
fn count_without_group_by() {
    let docs = fleet();
    let query = q("SELECT COUNT() FROM devices");
    assert!(query.is_aggregate());
    assert_eq!(query.aggregate(&docs), vec![json!({"$1": 5})]);

    let query = q("SELECT COUNT() AS numberOfDevices FROM devices WHERE tags.region = 'US'");
    assert_eq!(query.aggregate(&docs), vec![json!({"numberOfDevices": 2})]);

    let query = q("SELECT COUNT() AS a, COUNT(), count ( ) FROM devices WHERE tags.tier = 1");
    assert_eq!(
        query.aggregate(&docs),
        vec![json!({"a": 2, "$1": 2, "$2": 2})]
    );

    // No documents, or none matching: still one row.
    let query = q("SELECT COUNT() AS n FROM devices WHERE tags.region = 'Mars'");
    assert_eq!(query.aggregate(&docs), vec![json!({"n": 0})]);
    assert_eq!(query.aggregate(&[]), vec![json!({"n": 0})]);
    assert_eq!(query.aggregate(Vec::<&Value>::new()), vec![json!({"n": 0})]);
}

#[test]
fn group_by() {
    let docs = fleet();
    let query = q("SELECT tags.region, COUNT() AS n FROM devices GROUP BY tags.region");
    assert!(query.is_aggregate());
    // First-seen order; the undefined group has no key.
    assert_eq!(
        query.aggregate(&docs),
        vec![
            json!({"region": "US", "n": 2}),
            json!({"region": "EU", "n": 1}),
            json!({"n": 2}),
        ]
    );

    // WHERE applies before grouping; aliases and $n keys work in groups.
    let query = q(
        "SELECT COUNT(), tags.region AS r FROM devices WHERE properties.reported.temp \
         >= 25 GROUP BY tags.region",
    );
    assert_eq!(
        query.aggregate(&docs),
        vec![
            json!({"$1": 1, "r": "EU"}),
            json!({"$1": 1, "r": "US"}),
            json!({"$1": 1}),
        ]
    );

    // 1 and 1.0 are one group; null and undefined are different groups.
    let query = q("SELECT tags.tier, COUNT() AS n FROM devices GROUP BY tags.tier");
    assert_eq!(
        query.aggregate(&docs),
        vec![
            json!({"tier": 1, "n": 2}),
            json!({"tier": 2, "n": 1}),
            json!({"tier": null, "n": 1}),
            json!({"n": 1}),
        ]
    );

    // Several paths; a GROUP BY path may go unselected; no COUNT() gives distinct groups.
    let query = q("SELECT tags.region, tags.tier FROM devices GROUP BY tags.region, tags.tier");
    assert!(query.is_aggregate());
    assert_eq!(
        query.aggregate(&docs),
        vec![
            json!({"region": "US", "tier": 1}),
            json!({"region": "EU", "tier": 1.0}),
            json!({"region": "US", "tier": 2}),
            json!({"tier": null}),
            json!({}),
        ]
    );
    let query = q("SELECT COUNT() AS n FROM devices GROUP BY tags.region, devices.tags.tier");
    assert_eq!(
        query.aggregate(&docs),
        vec![
            json!({"n": 1}),
            json!({"n": 1}),
            json!({"n": 1}),
            json!({"n": 1}),
            json!({"n": 1}),
        ]
    );
    // Prefix stripping makes `devices.tags.region` the same path as `tags.region`.
    let query = q("SELECT devices.tags.region, COUNT() AS n FROM devices GROUP BY tags.region");
    assert_eq!(query.aggregate(&docs[..2]).len(), 2);
    // No documents: no groups.
    assert_eq!(query.aggregate(&[]), Vec::<Value>::new());
}

#[test]
fn group_by_object_values_ignore_key_order() {
    let docs = [
        json!({"tags": {"o": {"a": 1, "b": [1, {"c": 2}]}}}),
        json!({"tags": {"o": {"b": [1.0, {"c": 2}], "a": 1.0}}}),
        json!({"tags": {"o": {"a": 1}}}),
    ];
    let query = q("SELECT COUNT() AS n FROM devices GROUP BY tags.o");
    assert_eq!(
        query.aggregate(&docs),
        vec![json!({"n": 2}), json!({"n": 1})]
    );
}

#[test]
fn aggregate_of_plain_query_is_its_rows() {
    let docs = fleet();
    let query = q("SELECT deviceId FROM devices WHERE tags.region = 'US'");
    assert_eq!(
        query.aggregate(&docs),
        vec![json!({"deviceId": "d1"}), json!({"deviceId": "d3"})]
    );
    assert_eq!(matching_ids(&query, &docs), vec!["d1", "d3"]);
}

#[test]
fn aggregate_rules_are_enforced() {
    assert_eq!(
        err("SELECT deviceId, COUNT() FROM devices"),
        "Invalid query at position 8: 'deviceId' cannot be selected together with COUNT() \
         without GROUP BY"
    );
    assert_eq!(
        err("SELECT tags.region, tags.tier, COUNT() FROM devices GROUP BY tags.region"),
        "Invalid query at position 21: 'tags.tier' must appear in GROUP BY"
    );
    assert_eq!(
        err("SELECT * FROM devices GROUP BY tags.region"),
        "Invalid query at position 8: SELECT * cannot be used with GROUP BY"
    );
    assert_eq!(
        err("SELECT tags.a, properties.reported.a FROM devices"),
        "Invalid query at position 16: duplicate result name 'a'; use AS to rename"
    );
    assert_eq!(
        err("SELECT COUNT() AS $1, COUNT() FROM devices"),
        "Invalid query at position 23: duplicate result name '$1'; use AS to rename"
    );
    assert!(
        q("SELECT tags.a, properties.reported.a AS b FROM devices").project(&doc()) == json!({})
    );
}

#[test]
fn error_messages_have_positions() {
    let cases: &[(&str, &str)] = &[
        (
            "",
            "Syntax error at position 1: expected SELECT, found end of query",
        ),
        (
            "SELECT deviceId devices",
            "Syntax error at position 17: expected FROM, found 'devices'",
        ),
        (
            "SELECT * FROM",
            "Syntax error at position 14: expected a collection name (devices, \
             devices.modules or devices.jobs), found end of query",
        ),
        (
            "SELECT * FROM devices.jobs.x",
            "Invalid query at position 15: querying 'devices.jobs.x' is not supported; only \
             devices, devices.modules and devices.jobs can be queried",
        ),
        (
            "SELECT * FROM devices WHERE",
            "Syntax error at position 28: expected a condition, found end of query",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = ",
            "Syntax error at position 38: expected a value or property path, found end of query",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = 'abc",
            "Syntax error at position 38: unterminated string literal",
        ),
        (
            "SELECT * FROM devices WHERE (tags.x = 1",
            "Syntax error at position 40: expected AND, OR or ')', found end of query",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = 1)",
            "Syntax error at position 39: expected AND, OR, GROUP BY or end of query, found ')'",
        ),
        (
            "SELECT * FROM devices WHERE FOO(tags.x)",
            "Invalid query at position 29: unknown function 'FOO'",
        ),
        (
            "SELECT * FROM devices WHERE startswith(tags.x)",
            "Invalid query at position 29: function STARTSWITH takes 2 arguments, found 1",
        ),
        (
            "SELECT * FROM devices WHERE IS_NULL()",
            "Invalid query at position 29: function IS_NULL takes 1 argument, found 0",
        ),
        (
            "SELECT * FROM devices extra",
            "Syntax error at position 23: expected WHERE, GROUP BY or end of query, found 'extra'",
        ),
        (
            "SELECT * FROM devices GROUP BY tags.a tags.b",
            "Syntax error at position 39: expected ',' or end of query, found 'tags'",
        ),
        (
            "SELECT * FROM devices WHERE tags.x == 1",
            "Syntax error at position 37: expected a value or property path, found '='",
        ),
        (
            "SELECT * FROM devices WHERE tags.é = 1",
            "Syntax error at position 34: expected a property name after '.', found 'é'",
        ),
        (
            "SÉLECT * FROM devices",
            "Syntax error at position 1: expected SELECT, found 'S'",
        ),
        (
            "SELECT * FROM devices WHERE tags.x = 'é' AND ü",
            "Syntax error at position 46: expected a condition, found 'ü'",
        ),
    ];
    for &(text, want) in cases {
        assert_eq!(err(text), want, "{text:?}");
    }
    let e = Query::parse("SELECT").expect_err("incomplete");
    assert_eq!(e.to_string(), e.message());
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert_eq!(
        boxed.to_string(),
        "Syntax error at position 7: expected '*', a property path or COUNT(), found end of query"
    );
}

#[test]
fn malformed_queries_are_rejected() {
    let bad = [
        "",
        "   ",
        "SELECT",
        "SELECT *",
        "SELECT * FROM",
        "SELECT * FROM devices WHERE",
        "SELECT * FROM devices WHERE tags.x = ",
        "SELECT * FROM devices WHERE tags.x",
        "SELECT * FROM devices WHERE (tags.x = 1",
        "SELECT * FROM devices WHERE tags.x = 1)",
        "SELECT * FROM devices WHERE ((tags.x = 1)",
        "SELECT * FROM devices WHERE tags.x = 'abc",
        "SELECT * FROM devices WHERE tags.x = \"abc'",
        "SELECT * FROM devices WHERE tags.x = 'a\\q'",
        "SELECT * FROM devices WHERE tags.x = '\\u12'",
        "SELECT * FROM devices WHERE tags.x = '\\ud800'",
        "SELECT * FROM devices WHERE tags.x = '\\",
        "SELECT * FROM devices WHERE BOGUS(tags.x)",
        "SELECT * FROM devices WHERE IS_DEFINED(tags.x, tags.y)",
        "SELECT * FROM devices WHERE IS_DEFINED()",
        "SELECT * FROM devices WHERE ENDSWITH('a')",
        "SELECT * FROM devices WHERE IS_DEFINED(tags.x",
        "SELECT * FROM devices WHERE IS_DEFINED(tags.x,)",
        "SELECT * FROM devices WHERE IS_DEFINED(tags.x) = true",
        "SELECT * FROM jobs",
        "SELECT * FROM foo",
        "SELECT * FROM devices.modules.x",
        "SELECT * FROM devices; ",
        "SELECT * FROM devices WHERE tags.x = 1;",
        "SELECT * FROM devices WHERE tags.x = 1 AND",
        "SELECT * FROM devices WHERE tags.x = 1 OR OR tags.y = 2",
        "SELECT * FROM devices WHERE NOT",
        "SELECT * FROM devices WHERE tags.x IN",
        "SELECT * FROM devices WHERE tags.x IN 'a'",
        "SELECT * FROM devices WHERE tags.x IN [1, 2",
        "SELECT * FROM devices WHERE tags.x IN [1,, 2]",
        "SELECT * FROM devices WHERE tags.x IN [tags.y]",
        "SELECT * FROM devices WHERE tags.x NIN (1, 2)",
        "SELECT * FROM devices WHERE tags..x = 1",
        "SELECT * FROM devices WHERE tags. x = 1",
        "SELECT * FROM devices WHERE tags.1x = 1",
        "SELECT * FROM devices WHERE tags[1] = 1",
        "SELECT * FROM devices WHERE tags['x' = 1",
        "SELECT * FROM devices WHERE tags.x = 1.",
        "SELECT * FROM devices WHERE tags.x = 1.2.3",
        "SELECT * FROM devices WHERE tags.x = 12abc",
        "SELECT * FROM devices WHERE tags.x = -",
        "SELECT * FROM devices WHERE tags.x = 1e",
        "SELECT * FROM devices WHERE tags.x = 1e999",
        "SELECT * FROM devices WHERE tags.x =< 1",
        "SELECT * FROM devices WHERE tags.x ! 1",
        "SELECT * FROM devices WHERE tags.x = 1 GROUP tags.x",
        "SELECT * FROM devices GROUP BY",
        "SELECT * FROM devices GROUP BY tags.x,",
        "SELECT TOP * FROM devices",
        "SELECT TOP -1 * FROM devices",
        "SELECT TOP 5x * FROM devices",
        "SELECT , FROM devices",
        "SELECT deviceId, FROM devices",
        "SELECT deviceId AS FROM devices",
        "SELECT deviceId AS 1x FROM devices",
        "SELECT FROM devices",
        "SELECT COUNT(*) FROM devices",
        "SELECT COUNT(deviceId) FROM devices",
        "SELECT COUNT( FROM devices",
        "SELECT *, deviceId FROM devices",
        "SELECT deviceId, COUNT() FROM devices",
        "SELECT tags.x FROM devices GROUP BY tags.y",
        "SELECT * FROM devices GROUP BY tags.x",
        "SELECT a, a FROM devices",
        "SELECT * FROM devices WHERE tags.x = 1 SELECT",
        "SELECT * SELECT * FROM devices",
        "FROM devices SELECT *",
        "select * from devices where tags.x = 'ok' and ÿ",
        "SELECT * FROM devices WHERE \u{0}",
        "SELECT * FROM devices WHERE tags.x = '\u{1F600}",
        "\u{feff}SELECT * FROM devices",
        "😀😀😀",
        "SELECT * FROM devices WHERE tags.x = 1 AND (tags.y = 2 OR (tags.z = 3)",
        "SELECT * FROM devices WHERE ()",
        "SELECT * FROM devices WHERE true",
        "SELECT * FROM devices WHERE tags.x",
        "SELECT * FROM devices WHERE COUNT() = 1",
    ];
    assert!(bad.len() >= 20);
    for text in bad {
        assert!(Query::parse(text).is_err(), "{text:?} should be rejected");
    }
}

#[test]
fn reserved_words_cannot_start_paths_but_may_follow_a_dot() {
    assert!(hits(
        "tags.count = 3 AND tags.from = tags.from OR tags.select = 1 OR true = true",
        &doc()
    ));
    assert!(!hits("tags.select = 1", &doc()));
    assert_eq!(
        err("SELECT * FROM devices WHERE select = 1"),
        "Syntax error at position 29: expected a condition, found 'select'"
    );
    // `count` is only a function when called.
    let d = json!({"count": 7});
    assert_eq!(
        q("SELECT count FROM devices").project(&d),
        json!({"count": 7})
    );
}

#[test]
fn nesting_depth_is_limited() {
    let d = doc();
    let nested = |n: usize| {
        format!(
            "SELECT * FROM devices WHERE {}tags.count = 3{}",
            "(".repeat(n),
            ")".repeat(n)
        )
    };
    assert!(q(&nested(64)).matches(&d));
    assert_eq!(
        err(&nested(65)),
        "Invalid query at position 94: nesting is deeper than 64 levels"
    );
    // Far beyond the limit: an error, not a stack overflow.
    assert!(Query::parse(&nested(100_000)).is_err());
    assert!(Query::parse(&"(".repeat(100_000)).is_err());
    let nots = |n: usize| {
        format!(
            "SELECT * FROM devices WHERE {}tags.count = 3",
            "NOT ".repeat(n)
        )
    };
    assert!(q(&nots(64)).matches(&d));
    assert!(Query::parse(&nots(65)).is_err());
    assert!(Query::parse(&nots(100_000)).is_err());
    let arrays = |n: usize| {
        format!(
            "SELECT * FROM devices WHERE tags.count IN {}3{}",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert!(!q(&arrays(10)).matches(&d));
    assert!(Query::parse(&arrays(100_000)).is_err());
    // Long AND/OR chains are flat, so they are not limited.
    let chain = vec!["tags.count = 3"; 20_000].join(" AND ");
    assert!(hits(&chain, &d));
    let chain = vec!["tags.count = 4"; 20_000].join(" OR ");
    assert!(!hits(&chain, &d));
}

#[test]
fn large_queries_stay_fast() {
    // Linear work per item: these would take minutes with quadratic validation.
    let paths: Vec<String> = (0..20_000).map(|n| format!("tags.p{n}")).collect();
    let list = paths.join(", ");
    let query = q(&format!(
        "SELECT {list}, COUNT() AS n FROM devices GROUP BY {list}"
    ));
    let d = json!({"tags": {"p7": 1}});
    let rows = query.aggregate([&d, &d]);
    assert_eq!(rows, vec![json!({"p7": 1, "n": 2})]);
    let values: Vec<String> = (0..20_000).map(|n| n.to_string()).collect();
    let query = q(&format!(
        "SELECT * FROM devices WHERE tags.p7 IN [{}]",
        values.join(",")
    ));
    assert!(query.matches(&d));
}

#[test]
fn prefixes_of_valid_queries_never_panic() {
    let valid = [
        "SELECT * FROM devices",
        "SELECT TOP 10 deviceId, tags['my key'] AS k, COUNT() AS n FROM devices.modules \
         WHERE (tags.x = 'a''b' OR NOT tags.y IN [1, -2.5e3, \"c\\u00e9\", null]) AND \
         STARTSWITH(deviceId, 'dev') GROUP BY deviceId, tags['my key']",
        "select count() from devices where is_defined(properties.reported.temp) and \
         properties.reported.temp >= 21.5 and tags.z nin [true, false]",
        "SELECT devices.tags['région'] FROM devices WHERE tags.s = 'é😀' AND tags.n <> null",
    ];
    let docs = fleet();
    for text in valid {
        let mut boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        boundaries.push(text.len());
        let mut accepted = 0;
        for end in boundaries {
            let prefix = &text[..end];
            if let Ok(query) = Query::parse(prefix) {
                accepted += 1;
                // Whatever parses must also evaluate without panicking.
                let _ = query.aggregate(&docs);
                for doc in &docs {
                    let _ = query.project(doc);
                }
            }
        }
        assert!(accepted >= 1, "{text}");
    }
    for text in valid {
        assert!(Query::parse(text).is_ok(), "{text}");
    }
}

#[test]
fn random_mutations_never_panic() {
    let seeds = [
        "SELECT TOP 3 deviceId, COUNT() AS c FROM devices WHERE (tags.a = 'x''y' OR \
         NOT IS_DEFINED(tags.b)) AND tags.c IN [1, 2.5, -3e2] GROUP BY deviceId",
        "SELECT * FROM devices.modules WHERE STARTSWITH(moduleId, \"m\\u00e9\") AND \
         tags['k'] NIN [null, true]",
    ];
    let alphabet: Vec<char> = "()[]'\",.*=<>!-+eE0159 aZ_$\\u\u{e9}\u{1F600}\n"
        .chars()
        .chain(['S', 'N', 'O', 'T', 'A', 'D', 'I'])
        .collect();
    let docs = fleet();
    // A fixed linear congruential generator keeps the test deterministic.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % bound.max(1)
    };
    let mut parsed = 0;
    for round in 0..3000 {
        let mut chars: Vec<char> = seeds[round % seeds.len()].chars().collect();
        for _ in 0..=next(4) {
            let at = next(chars.len() + 1);
            match next(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at < chars.len() => chars[at] = alphabet[next(alphabet.len())],
                _ => chars.insert(at, alphabet[next(alphabet.len())]),
            }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(query) = Query::parse(&text) {
            parsed += 1;
            let _ = query.aggregate(&docs);
            for doc in &docs {
                let _ = query.matches(doc);
                let _ = query.project(doc);
            }
        }
    }
    // Some mutations (e.g. inside string literals) keep the query valid.
    assert!(parsed > 0);
}
