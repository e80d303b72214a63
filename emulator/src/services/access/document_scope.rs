//! Access rules narrowed to some documents of a sync database.
//!
//! A rule's `extra` on a sync database is a comma-separated list of `attribute|value` entries;
//! entries for [`DOCUMENT_ATTRIBUTE`] name the documents the rule covers, a trailing `*` on the
//! value making it a prefix (`report-*`, or `*` for every document). A rule whose `extra` has no
//! such entry covers the whole resource, as before. A rule that names documents covers only a
//! request for one of them: never a request about the database as a whole (SQL on its file).

/// The attribute id of a document entry in a rule's `extra`.
pub const DOCUMENT_ATTRIBUTE: &str = "volt:resource-sync-document-id";

/// The `extra` a request about the document `document_id` is decided with.
pub fn request_for(document_id: &str) -> String {
    format!("{DOCUMENT_ATTRIBUTE}|{document_id}")
}

/// The documents a rule's `extra` names, or `None` when it names none.
fn documents(rule_extra: &str) -> Option<Vec<&str>> {
    let named: Vec<&str> = rule_extra
        .split(',')
        .filter_map(|entry| entry.trim().split_once('|'))
        .filter(|(attribute, _)| attribute.trim() == DOCUMENT_ATTRIBUTE)
        .map(|(_, value)| value.trim())
        .collect();
    (!named.is_empty()).then_some(named)
}

/// Whether a rule with `rule_extra` covers a request made with `asked` (empty, or
/// [`request_for`] a document).
pub fn covers(rule_extra: &str, asked: &str) -> bool {
    let Some(named) = documents(rule_extra) else {
        return true;
    };
    let Some(document) = asked
        .strip_prefix(DOCUMENT_ATTRIBUTE)
        .and_then(|rest| rest.strip_prefix('|'))
    else {
        return false;
    };
    named.iter().any(|value| match value.strip_suffix('*') {
        Some(prefix) => document.starts_with(prefix),
        None => *value == document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_naming_documents_cover_only_those() {
        let rule =
            "volt:resource-sync-document-id|doc-123, volt:resource-sync-document-id|report-*";
        assert!(covers(rule, &request_for("doc-123")));
        assert!(covers(rule, &request_for("report-2026")));
        assert!(!covers(rule, &request_for("doc-1234")));
        assert!(!covers(rule, &request_for("secret")));
        assert!(!covers(rule, ""), "not the database as a whole");
        assert!(covers(
            "volt:resource-sync-document-id|*",
            &request_for("x")
        ));
        assert!(covers("", &request_for("x")));
        assert!(covers("", ""));
        assert!(
            covers("something-else|1", ""),
            "other extras keep covering everything"
        );
    }
}
