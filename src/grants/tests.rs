//! The grants stage's own tests: canonical fingerprints, and how sources' answers merge.

mod fingerprint_tests {
    use super::super::*;

    #[test]
    fn equal_grants_share_a_fingerprint_and_any_change_gives_another() {
        let read = |yaml: &str| serde_norway::from_str::<Grants>(yaml).unwrap();
        let writer = read("databases: { production: [reader, writer] }");
        let again = read("databases: { production: [reader, writer] }");
        let reader = read("databases: { production: [reader] }");
        assert_eq!(writer.fingerprint(), again.fingerprint());
        assert_ne!(writer.fingerprint(), reader.fingerprint());
        // A computed fingerprint is not part of equality.
        assert_eq!(writer, read("databases: { production: [reader, writer] }"));
    }
}

mod merge_tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::*;

    /// A source with fixed answers per key, counting its look-ups.
    #[derive(Default)]
    struct Fixed {
        answers: HashMap<&'static str, Result<Option<Arc<Grants>>, GrantsError>>,
        asked: AtomicUsize,
    }

    impl Fixed {
        fn knowing(key: &'static str, yaml: &str) -> Arc<Self> {
            let grants = serde_norway::from_str(yaml).unwrap();
            let answers = HashMap::from([(key, Ok(Some(Arc::new(grants))))]);
            Arc::new(Self {
                answers,
                ..Default::default()
            })
        }

        fn down() -> Arc<Self> {
            let answers = HashMap::from([("alice", Err(GrantsError::Unavailable))]);
            Arc::new(Self {
                answers,
                ..Default::default()
            })
        }
    }

    impl GrantSource for Arc<Fixed> {
        fn lookup<'a>(&'a self, key: &'a str, _deadline: Instant) -> LookupFuture<'a> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.get(key).cloned().unwrap_or(Ok(None));
            Box::pin(async move { answer })
        }

        fn label(&self) -> String {
            "fixed".into()
        }
    }

    fn alice() -> Identity {
        Identity {
            subject: "alice".into(),
            issuer: "https://idp.example.com".into(),
            email: None,
            name: None,
            expires_at: u64::MAX,
            certificate: None,
            aws: None,
            claims: None,
            kubernetes: None,
        }
    }

    fn lookup(merge: MergePolicy, sources: &[&Arc<Fixed>]) -> GrantsLookup {
        let sources = sources
            .iter()
            .map(|s| Arc::new((*s).clone()) as Arc<dyn GrantSource>)
            .collect();
        GrantsLookup::new(
            sources,
            merge,
            UnknownSubjectPolicy::Deny,
            MalformedItemPolicy::Unavailable,
        )
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(1)
    }

    #[tokio::test]
    async fn union_combines_every_source_that_knows_the_identity_in_one_canonical_form() {
        let file = Fixed::knowing(
            "alice",
            "{ global: [reader], databases: { orders: [writer] } }",
        );
        let store = Fixed::knowing(
            "alice",
            "{ global: [reader, admin], databases: { orders: [reader, writer], billing: [reader] } }",
        );
        let stranger = Fixed::knowing("bob", "{ global: [admin] }");
        let union = lookup(MergePolicy::Union, &[&file, &stranger, &store]);
        let grants = union.grants_for(&alice(), soon()).await.unwrap();
        assert_eq!(grants.global, ["admin", "reader"]);
        assert_eq!(grants.databases["orders"], ["reader", "writer"]);
        assert_eq!(grants.databases["billing"], ["reader"]);
        // The sources' order does not change the grants, so neither the token nor its cache key.
        let reversed = lookup(MergePolicy::Union, &[&store, &file]);
        let again = reversed.grants_for(&alice(), soon()).await.unwrap();
        assert_eq!(again.fingerprint(), grants.fingerprint());
    }

    #[tokio::test]
    async fn under_union_a_source_that_cannot_answer_is_503_never_a_smaller_grant() {
        let file = Fixed::knowing("alice", "{ global: [reader] }");
        let union = lookup(MergePolicy::Union, &[&file, &Fixed::down()]);
        assert_eq!(
            union.grants_for(&alice(), soon()).await.unwrap_err(),
            GrantsError::Unavailable
        );
    }

    #[tokio::test]
    async fn first_takes_the_first_source_that_knows_and_asks_no_further() {
        let file = Fixed::knowing("alice", "{ global: [reader] }");
        let store = Fixed::knowing("alice", "{ global: [admin] }");
        let first = lookup(MergePolicy::First, &[&file, &store]);
        let grants = first.grants_for(&alice(), soon()).await.unwrap();
        assert_eq!(grants.global, ["reader"]);
        assert_eq!(store.asked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn when_no_source_knows_the_identity_the_unknown_subject_policy_decides() {
        let stranger = Fixed::knowing("bob", "{ global: [admin] }");
        let union = lookup(MergePolicy::Union, &[&stranger]);
        assert_eq!(
            union.grants_for(&alice(), soon()).await.unwrap_err(),
            GrantsError::UnknownSubject
        );
    }

    #[test]
    fn merge_reads_first_or_union_and_refuses_the_rest_with_its_key() {
        let config = |merge: &str| {
            let yaml = format!(
                "token: {{ issuer: https://tv.example.com }}
signing: {{ dev_generate: true }}
trust: [ {{ issuer: https://idp.example.com }} ]
grants: {{ file: grants.yaml, merge: {merge} }}
"
            );
            crate::Config::from_yaml(&yaml, std::path::Path::new("."))
        };
        assert_eq!(config("union").unwrap().grants.merge, MergePolicy::Union);
        assert_eq!(config("first").unwrap().grants.merge, MergePolicy::First);
        let error = config("all").unwrap_err();
        assert_eq!(error.problems[0].path, "grants.merge", "{error}");
    }
}
