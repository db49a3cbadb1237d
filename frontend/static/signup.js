// The sign-up page's card field (loaded only when Stripe billing is on, after Stripe.js).
// For a paid plan paid by card, the card is turned into a Stripe PaymentMethod in the browser
// and only its id (pm_…) is posted, in the hidden `payment_method` field; the card number
// never reaches Lango. Free plans and "pay by M-Pesa" submit as they are.
(function () {
  "use strict";

  var form = document.getElementById("signup-form");
  if (!form || typeof window.Stripe !== "function") return;

  var stripe = window.Stripe(form.getAttribute("data-stripe-key"));
  var card = stripe.elements().create("card");
  card.mount("[data-card-element]");

  var plan = form.querySelector("select[name=plan]");
  var hidden = form.querySelector("input[name=payment_method]");
  var payment = form.querySelector("[data-payment]");
  var cardBox = form.querySelector("[data-card]");
  var mpesaNote = form.querySelector("[data-mpesa]");
  var errorBox = form.querySelector("[data-card-error]");
  var button = form.querySelector("button[type=submit]");

  function planIsPaid() {
    var option = plan.options[plan.selectedIndex];
    return Boolean(option && option.getAttribute("data-paid") === "1");
  }

  function payingByCard() {
    var choice = form.querySelector("input[name=pay_with]:checked");
    return !choice || choice.value === "card";
  }

  function sync() {
    payment.hidden = !planIsPaid();
    cardBox.hidden = !payingByCard();
    mpesaNote.hidden = payingByCard();
  }

  function fail(message) {
    errorBox.textContent = "Card: " + message;
    button.disabled = false;
  }

  plan.addEventListener("change", sync);
  form.querySelectorAll("input[name=pay_with]").forEach(function (radio) {
    radio.addEventListener("change", sync);
  });
  card.on("change", function () {
    hidden.value = "";  // a new card needs a new PaymentMethod
    errorBox.textContent = "";
  });
  sync();

  form.addEventListener("submit", function (event) {
    if (!planIsPaid() || !payingByCard() || hidden.value) return;
    event.preventDefault();
    button.disabled = true;
    errorBox.textContent = "";
    Promise.resolve(stripe.createPaymentMethod({ type: "card", card: card })).then(
      function (result) {
        if (result && result.paymentMethod) {
          hidden.value = result.paymentMethod.id;
          form.submit();
        } else if (result && result.error) {
          fail(result.error.message || "The card was not accepted.");
        } else {
          fail("The card could not be checked here; choose to pay by M-Pesa instead.");
        }
      },
      function () {
        fail("Stripe could not be reached; try again, or choose to pay by M-Pesa.");
      }
    );
  });
})();
