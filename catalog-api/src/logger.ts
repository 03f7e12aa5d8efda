/**
 * The logger the catalog API's modules take: the part of pino's (and Fastify's) logger they use,
 * so that a module can be built without Fastify and tested with any object of this shape.
 */
export type Logger = {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
};
