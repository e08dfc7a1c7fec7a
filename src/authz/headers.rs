//! The headers of a Check: those read from the CheckRequest, and those the answer writes.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::google::protobuf::{BoolValue, Value, value};

/// Every value of each header this service reads, borrowed from the CheckRequest. With
/// `encode_raw_headers` Envoy sends `header_map` (raw bytes, one entry per header line), read in
/// one pass; otherwise the `headers` map. An absent header costs no allocation.
#[derive(Default)]
pub(super) struct ReadHeaders<'a> {
    pub(super) authorization: Vec<&'a [u8]>,
    pub(super) xfcc: Vec<&'a [u8]>,
    pub(super) alb_certificate: Vec<&'a [u8]>,
    pub(super) request_id: Vec<&'a [u8]>,
    pub(super) traceparent: Vec<&'a [u8]>,
    pub(super) b3_trace_id: Vec<&'a [u8]>,
    pub(super) b3_span_id: Vec<&'a [u8]>,
    pub(super) b3_sampled: Vec<&'a [u8]>,
}

impl<'a> ReadHeaders<'a> {
    pub(super) fn of(
        http: &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
    ) -> Self {
        let mut read = Self::default();
        if let Some(map) = http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
            for header in &map.headers {
                if let Some(values) = read.values_of(&header.key) {
                    values.push(if header.raw_value.is_empty() {
                        header.value.as_bytes()
                    } else {
                        header.raw_value.as_slice()
                    });
                }
            }
        } else {
            for (name, value) in &http.headers {
                if let Some(values) = read.values_of(name) {
                    values.push(value.as_bytes());
                }
            }
        }
        read
    }

    /// Where values of the header `name` go; `None` for a header this service ignores.
    fn values_of(&mut self, name: &str) -> Option<&mut Vec<&'a [u8]>> {
        // `eq_ignore_ascii_case` compares lengths first, so most headers cost a few length tests.
        let is = |wanted: &str| name.eq_ignore_ascii_case(wanted);
        if is("authorization") {
            Some(&mut self.authorization)
        } else if is("x-forwarded-client-cert") {
            Some(&mut self.xfcc)
        } else if is("x-amzn-mtls-clientcert") {
            Some(&mut self.alb_certificate)
        } else if is("x-request-id") {
            Some(&mut self.request_id)
        } else if is("traceparent") {
            Some(&mut self.traceparent)
        } else if is("x-b3-traceid") {
            Some(&mut self.b3_trace_id)
        } else if is("x-b3-spanid") {
            Some(&mut self.b3_span_id)
        } else if is("x-b3-sampled") {
            Some(&mut self.b3_sampled)
        } else {
            None
        }
    }
}

/// A header that replaces every existing value. Envoy 1.40 reads only the deprecated
/// `append` flag; newer Envoy reads `append_action` when `append` is unset. Both are set so
/// every version overwrites (Envoy's ext_authz header-mutation rules; docs/security.md).
#[allow(deprecated)]
pub(super) fn overwrite_header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

pub(super) fn add_header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

pub(super) fn string_value(text: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(text.to_owned())),
    }
}
