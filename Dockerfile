# One image for every tapcredit server; the command names the service:
#   docker build -t tapcredit .
#   docker run tapcredit node dist/issuer/main.js --help
# Settings are flags or environment variables (docs/configuration.md). Keys and
# certificates are mounted (or made once with dist/scripts/keys.js and
# dist/scripts/certs.js, as deploy/compose.yaml does); servers never create keys.

FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    TAPCREDIT_DATA_DIR=/data
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Named volumes mounted here start out owned by the unprivileged user.
RUN mkdir -p /data /secrets && chown node:node /data /secrets
USER node
VOLUME ["/data"]
EXPOSE 50051 50052 50053 9451 9452 9453
CMD ["node", "dist/issuer/main.js"]
