//! The gRPC service: `ferrocast.v1.FerrocastApi` over [`Api`].

use std::time::Instant;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::access::Access;
use crate::pb;
use crate::pb::ferrocast_api_server::{FerrocastApi, FerrocastApiServer};
use crate::service::{record, Api, Subscribed};

/// Response metadata of a Subscribe with `since`: `true` when the replay
/// reached back to it, `false` when publications were missed.
pub const RECOVERED_HEADER: &str = "ferrocast-recovered";

/// The tonic service, checking the API key of every call with `access`.
pub fn grpc_service(
    api: Api,
    access: Access,
) -> tonic::service::interceptor::InterceptedService<
    FerrocastApiServer<GrpcApi>,
    impl tonic::service::Interceptor + Clone,
> {
    let check = move |request: Request<()>| -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match access.check(authorization) {
            Ok(()) => Ok(request),
            Err(error) => {
                record("any", "grpc", Instant::now(), error.code());
                Err(error.into())
            }
        }
    };
    FerrocastApiServer::with_interceptor(GrpcApi { api }, check)
}

/// [`Api`] as the generated service trait.
#[derive(Debug, Clone)]
pub struct GrpcApi {
    api: Api,
}

/// Runs one unary call, recording it.
async fn unary<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, crate::ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
    record(method, "grpc", started, code);
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl FerrocastApi for GrpcApi {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        unary("publish", self.api.publish(request.into_inner())).await
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        unary("broadcast", self.api.broadcast(request.into_inner())).await
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        unary("history", self.api.history(request.into_inner())).await
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceResponse>, Status> {
        unary("presence", self.api.presence(request.into_inner())).await
    }

    async fn presence_stats(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::PresenceStatsResponse>, Status> {
        unary(
            "presence_stats",
            self.api.presence_stats(request.into_inner()),
        )
        .await
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        unary("disconnect", self.api.disconnect(request.into_inner())).await
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Result<Response<pb::UnsubscribeResponse>, Status> {
        unary("unsubscribe", self.api.unsubscribe(request.into_inner())).await
    }

    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        unary("info", async { Ok(self.api.info()) }).await
    }

    type SubscribeStream = futures::stream::BoxStream<'static, Result<pb::Publication, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let opened: Response<Subscribed> =
            unary("subscribe", self.api.subscribe(request.into_inner())).await?;
        let Subscribed {
            recovered,
            publications,
        } = opened.into_inner();
        let mut response =
            Response::new(publications.map(|item| item.map_err(Status::from)).boxed());
        if let Some(recovered) = recovered {
            let value = if recovered { "true" } else { "false" };
            response.metadata_mut().insert(
                RECOVERED_HEADER,
                tonic::metadata::MetadataValue::from_static(value),
            );
        }
        Ok(response)
    }
}
