//! The problem catalogue in code and docs/problems.md are the same table: every slug the APIs and
//! the operator console can answer with is documented with its title and status, and nothing
//! documented is unknown to the code. Needs no running service.

use std::collections::BTreeMap;

/// `slug → (title, status)` from the catalogue in code.
fn in_code() -> BTreeMap<String, (String, u16)> {
    let mut catalogue = BTreeMap::new();
    let all = eventline_command::problems::all()
        .chain(eventline_query::problems::all())
        .chain(eventline_projector::console::problems());
    for kind in all {
        let entry = (kind.title.to_owned(), kind.status.as_u16());
        if let Some(other) = catalogue.insert(kind.slug.to_owned(), entry.clone()) {
            assert_eq!(other, entry, "{} is defined twice, differently", kind.slug);
        }
    }
    catalogue
}

/// `slug → (title, status)` from the table in docs/problems.md (the first status of a row that
/// names several).
fn in_docs() -> BTreeMap<String, (String, u16)> {
    let path = eventline_testkit::repository().join("docs/problems.md");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let slug = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let status: String = cells.get(3)?.chars().take_while(char::is_ascii_digit).collect();
            Some((slug.to_owned(), (cells[2].to_owned(), status.parse().ok()?)))
        })
        .collect()
}

#[test]
fn the_documented_problems_are_the_catalogue() {
    let (code, docs) = (in_code(), in_docs());
    assert!(code.len() > 30, "the catalogue looks truncated: {code:?}");
    for (slug, entry) in &code {
        assert_eq!(docs.get(slug), Some(entry), "docs/problems.md on `{slug}`");
    }
    for slug in docs.keys() {
        assert!(code.contains_key(slug), "docs/problems.md documents `{slug}`, which no code answers with");
    }
}
