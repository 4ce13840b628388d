//! A file as a streamed request body, read a chunk at a time (an image may
//! be gigabytes), reporting how much has left.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

const CHUNK: usize = 256 * 1024;

pub struct FileBody<P> {
    file: tokio::fs::File,
    len: u64,
    sent: u64,
    buf: Vec<u8>,
    progress: P,
}

impl<P: Fn(u64, u64)> FileBody<P> {
    pub fn new(file: tokio::fs::File, len: u64, progress: P) -> Self {
        Self {
            file,
            len,
            sent: 0,
            buf: vec![0; CHUNK],
            progress,
        }
    }
}

impl<P: Fn(u64, u64) + Unpin> http_body::Body for FileBody<P> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let me = self.get_mut();
        if me.sent >= me.len {
            return Poll::Ready(None);
        }
        let mut buf = ReadBuf::new(&mut me.buf);
        match Pin::new(&mut me.file).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file ended at {} of {} bytes", me.sent, me.len),
                    ))));
                }
                let n = n.min(usize::try_from(me.len - me.sent).unwrap_or(usize::MAX));
                me.sent += n as u64;
                (me.progress)(me.sent, me.len);
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(&me.buf[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}
