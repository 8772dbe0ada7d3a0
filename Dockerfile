# cardbridge: one static binary on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/cardbridge ./cmd/cardbridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cardbridge /usr/local/bin/cardbridge
USER nonroot:nonroot
EXPOSE 8080 8090
ENTRYPOINT ["/usr/local/bin/cardbridge"]
CMD ["run"]
