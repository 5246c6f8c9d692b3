//! Encoding a [`Publication`] as the backplane [`Envelope`] and back.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use ferrocast_protocol::envelope::{Envelope, Header, Position, ENVELOPE_VERSION};
use ferrocast_protocol::StreamPosition;
use ferrocast_protocol::{Topic, TopicError, MAX_TOPIC_LEN};

use crate::publication::Publication;

/// Why bytes from the backplane are not a publication.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a ferrocast envelope: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("envelope carries an invalid topic: {0}")]
    Topic(#[from] TopicError),
}

/// Encodes `publication` for the backplane.
pub fn encode(publication: &Publication) -> Bytes {
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        origin_node: publication.origin.to_string(),
        topic: publication.topic.as_str().to_string(),
        payload: publication.payload.clone(),
        content_type: publication
            .content_type
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        headers: publication
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        published_at_micros: publication.published_at_micros,
        position: publication.position.as_ref().map(|p| Position {
            epoch: p.epoch.clone(),
            offset: p.offset,
        }),
    };
    Bytes::from(envelope.encode_to_vec())
}

/// Decodes an envelope. Unknown fields (from a newer node) are ignored; the
/// payload shares `bytes`.
pub fn decode(bytes: Bytes) -> Result<Publication, EnvelopeError> {
    let envelope = Envelope::decode(bytes)?;
    Ok(Publication {
        topic: Topic::parse(&envelope.topic, MAX_TOPIC_LEN)?,
        payload: envelope.payload,
        content_type: (!envelope.content_type.is_empty()).then(|| Arc::from(envelope.content_type)),
        headers: envelope
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        origin: Arc::from(envelope.origin_node),
        published_at_micros: envelope.published_at_micros,
        position: envelope.position.map(|p| StreamPosition {
            epoch: p.epoch,
            offset: p.offset,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Publication {
        let mut p = Publication::new(
            Topic::parse("chat.room1", MAX_TOPIC_LEN).unwrap(),
            Bytes::from_static(br#"{"text":"hi"}"#),
            Arc::from("node-a"),
        );
        p.headers = vec![
            ("x-trace".into(), "abc".into()),
            ("x-trace".into(), "second".into()),
        ];
        p.content_type = Some(Arc::from("text/plain"));
        p.position = Some(StreamPosition {
            epoch: "e1".into(),
            offset: 42,
        });
        p
    }

    #[test]
    fn round_trips_every_field() {
        let p = sample();
        assert_eq!(decode(encode(&p)).unwrap(), p);
        let plain = Publication::new(
            Topic::parse("a", 255).unwrap(),
            Bytes::from_static(b"1"),
            Arc::from("n"),
        );
        assert_eq!(decode(encode(&plain)).unwrap(), plain);
    }

    /// A newer node may add fields; this node must still read the envelope.
    #[test]
    fn ignores_fields_from_a_newer_layout() {
        let original = sample();
        let mut bytes = encode(&original).to_vec();
        // Field 99, wire type 2 (length-delimited): "future".
        prost::encoding::encode_key(99, prost::encoding::WireType::LengthDelimited, &mut bytes);
        prost::encoding::encode_varint(6, &mut bytes);
        bytes.extend_from_slice(b"future");
        // Field 100, varint: version-like number.
        prost::encoding::encode_key(100, prost::encoding::WireType::Varint, &mut bytes);
        prost::encoding::encode_varint(7, &mut bytes);
        assert_eq!(decode(Bytes::from(bytes)).unwrap(), original);
    }

    #[test]
    fn rejects_garbage_and_bad_topics() {
        assert!(matches!(
            decode(Bytes::from_static(b"\xff\xff\xff")),
            Err(EnvelopeError::Decode(_))
        ));
        let bad = Envelope {
            topic: "a..b".into(),
            ..Envelope::default()
        };
        assert!(matches!(
            decode(Bytes::from(bad.encode_to_vec())),
            Err(EnvelopeError::Topic(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(Bytes::from(bytes));
        }
    }
}
