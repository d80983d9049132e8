// Starts Swagger UI on /docs with the server's own OpenAPI document. Kept out of the
// page so that the page's Content-Security-Policy needs no inline script.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    domNode: root,
    deepLinking: true,
    validatorUrl: null, // never send the document to a validator on another site
    persistAuthorization: false,
  });
})();
