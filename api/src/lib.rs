//! RealMQ's REST front (warp), mounted under `/api/v1`.
//!
//! Every reply uses the contract's envelope: `{"code":0,"data":...}` on success and
//! `{"code":<non-zero>,"message":...}` with a 4xx/5xx status on failure; requests that match no
//! route get a JSON 404, never a bare text body.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use serde_json::json;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// All routes: `GET /api/v1/health` (process up, no credentials).
pub fn routes()
-> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let health = warp::path!("api" / "v1" / "health")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"code": 0, "data": {"status": "up"}})));
    health.recover(recover)
}

/// Turns warp's rejections into the error envelope.
async fn recover(err: Rejection) -> Result<impl Reply, Infallible> {
    let (status, message) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{err:?}"))
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&json!({"code": status.as_u16(), "message": message})),
        status,
    ))
}

/// Binds `addr` and returns the bound address with the server future, which ends once
/// `shutdown` resolves and in-flight requests finish.
pub async fn bind(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let server = warp::serve(routes())
        .incoming(listener)
        .graceful(shutdown)
        .run();
    Ok((local, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn health_answers_with_the_envelope() {
        let res = warp::test::request()
            .path("/api/v1/health")
            .reply(&routes())
            .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(body["code"], 0);
        assert_eq!(body["data"]["status"], "up");
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404() {
        let res = warp::test::request()
            .path("/api/v1/nope")
            .reply(&routes())
            .await;
        assert_eq!(res.status(), 404);
        let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_ne!(body["code"], 0);
        assert_eq!(body["message"], "not found");
    }
}
