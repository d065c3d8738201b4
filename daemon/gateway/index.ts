export { Gateway, type GatewayDeps } from './server.js';
