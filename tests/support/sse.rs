//! A Server-Sent Events client for the live streams: reads `event`, `id` and `data` fields as the
//! EventSource specification frames them, skipping comments (heartbeats).

use std::time::Duration;

use serde_json::Value;

/// One event as a browser's `EventSource` would dispatch it.
#[derive(Debug, Clone)]
pub struct Message {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

pub struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    /// Opens `url`, resuming after `last_event_id` if given; asserts a `200 text/event-stream`.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Stream {
        // No overall timeout: a stream lasts as long as the test reads it (`next` bounds each wait).
        let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().unwrap();
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream", "{url}");
        Stream { response, buffer: String::new() }
    }

    /// The next event (waiting at most 30 s).
    pub async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(30), self.read()).await.expect("an event within 30 s")
    }

    async fn read(&mut self) -> Message {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = parse(&block) {
                    return message;
                }
                continue;
            }
            let chunk = self.response.chunk().await.unwrap().expect("the stream to stay open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// An event block, or `None` for a comment-only block.
fn parse(block: &str) -> Option<Message> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    let event = event?;
    Some(Message { event, id, data: serde_json::from_str(&data.join("\n")).unwrap() })
}
