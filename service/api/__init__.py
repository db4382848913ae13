"""The HTTP layer: routes that parse, call the data plane and serialise; error mapping;
request middleware; the OpenAPI document."""
